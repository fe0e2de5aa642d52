"""English sentences written for graphprune's embedding-quality benchmark (bench_minilm.py).

Written for this benchmark (not taken from any corpus): varied topics, registers and lengths
(4 to 30 words). ``SINGLES`` stand alone; ``PAIRS`` are paraphrase pairs (same meaning, different
words) used for a small retrieval check: with a good embedding, each pair member's nearest
neighbour among all sentences is its partner. ``SENTENCES`` is every sentence once, singles
first, then the pairs flattened (``PAIRS[i]`` is ``SENTENCES[len(SINGLES) + 2 * i]`` and
``SENTENCES[len(SINGLES) + 2 * i + 1]``).
"""

from __future__ import annotations

SINGLES: tuple[str, ...] = (
    # everyday life
    "The kettle clicked off just as the phone started ringing.",
    "She folded the laundry while listening to an old radio play.",
    "We ran out of milk again.",
    "My neighbour leaves his bicycle chained to the same lamppost every night.",
    "The queue at the bakery stretched all the way to the corner.",
    "He forgot his umbrella and arrived at the office completely soaked.",
    "Please remember to water the tomatoes before you leave for the weekend.",
    "The children built a fort out of sofa cushions and blankets.",
    "Our landlord finally fixed the dripping tap in the bathroom after three months of polite "
    "reminders.",
    "I lost my keys somewhere between the car park and the front door.",
    "The dishwasher makes a strange grinding noise during the rinse cycle.",
    "Grandma still writes her shopping list on the back of old envelopes.",
    "Turn left at the petrol station.",
    "They painted the spare bedroom a pale shade of green.",
    "A parcel was left on the doorstep while everyone was out.",
    # food and cooking
    "Toast the cumin seeds in a dry pan until they smell nutty.",
    "This soup needs more salt and a squeeze of lemon.",
    "The restaurant only serves breakfast until half past eleven.",
    "Fresh pasta cooks in about three minutes, much faster than the dried kind.",
    "He burned the garlic, so the whole kitchen smelled bitter for an hour.",
    "Sourdough bread depends on a live culture of wild yeast and lactic acid bacteria.",
    "Let the dough rest overnight in the fridge before shaping it.",
    "Mangoes were cheap at the market this week.",
    "The chef plated the fish on a bed of lentils with a bright herb oil.",
    "Our street has four pizza places but nowhere to buy a decent sandwich.",
    "Chopping onions under cold running water supposedly stops your eyes from stinging.",
    "Dinner was cold rice and leftover curry eaten straight from the container.",
    # weather and nature
    "Heavy rain is expected across the north of the country tomorrow afternoon.",
    "The lake froze solid for the first time in twenty years.",
    "A thick fog rolled in from the sea and swallowed the harbour lights.",
    "Oak trees can live for more than a thousand years.",
    "Bees visit thousands of flowers to make a single spoonful of honey.",
    "Thunder rattled the windows all night.",
    "The drought has left the reservoir at its lowest level since records began.",
    "Migrating geese flew over the village in a long, untidy line.",
    "Moss grows thickly on the shaded side of the old stone wall.",
    "A hailstorm flattened the wheat fields a week before the harvest.",
    "The glacier has retreated almost two kilometres over the past century.",
    "Snow fell softly on the empty playground.",
    "Volcanic soil is often unusually fertile, which is why farms cluster on the slopes of active "
    "volcanoes.",
    "Octopuses can change the colour and texture of their skin in a fraction of a second.",
    "The river burst its banks after three days of continuous rain.",
    # science
    "Water boils at a lower temperature on a high mountain because the air pressure is lower.",
    "Light from the Sun takes about eight minutes to reach the Earth.",
    "The experiment failed because the samples had been contaminated.",
    "Mitochondria produce most of the chemical energy a cell needs.",
    "Astronomers detected a faint signal from a galaxy billions of light years away.",
    "Diamonds and graphite are both made entirely of carbon atoms arranged in different ways.",
    "The vaccine trial enrolled nearly forty thousand volunteers across six countries.",
    "Sound travels faster through water than through air.",
    "Her thesis examines how soil bacteria break down plastic.",
    "The telescope's mirror must be polished to within a few nanometres of the ideal shape.",
    "Tectonic plates move roughly as fast as fingernails grow.",
    "Enzymes speed up chemical reactions without being consumed by them.",
    "The probe will spend six years travelling to Jupiter's icy moons.",
    "Rust forms when iron reacts with oxygen and moisture.",
    # technology and computing
    "The update broke the printer driver on half of the office laptops.",
    "Restart the router and wait two minutes before trying again.",
    "Our database query slowed down after the table grew past ten million rows.",
    "The compiler rejects the program because a variable is used before it is declared.",
    "Cloud storage costs have quietly become the biggest line in the budget.",
    "She wrote a script that renames thousands of photos by the date they were taken.",
    "The battery drains quickly when the screen brightness is at maximum.",
    "Two-factor authentication would have prevented the account takeover.",
    "The neural network was pruned to half its size with almost no loss in accuracy.",
    "Nobody remembers why this configuration flag exists, so nobody dares to remove it.",
    "A memory leak in the image viewer crashed the server every few days.",
    "The website loads slowly on mobile phones because the images are far too large.",
    "Version control lets a team undo mistakes and see who changed what.",
    "He spent the afternoon chasing a bug that turned out to be a missing comma.",
    "Keyboard shortcuts save me hours every week.",
    "The new chip performs matrix multiplication in dedicated hardware units.",
    # business and economy
    "The company reported a small profit despite falling sales in Europe.",
    "Interest rates were left unchanged at the central bank's latest meeting.",
    "The shop closed after forty years because the rent doubled.",
    "Shares in the airline dropped sharply after the strike was announced.",
    "Small businesses struggled to pay their energy bills last winter.",
    "The startup raised twelve million dollars to build cheaper batteries for electric buses.",
    "Inflation eased slightly in March, mainly because fuel prices fell.",
    "Our quarterly meeting has been moved to Thursday morning.",
    "The merger still needs approval from competition regulators in three countries.",
    "Customers complained that the new pricing plan was confusing and unfair.",
    "Exports of coffee fell after a poor harvest in the highlands.",
    "The factory will hire two hundred workers when the new production line opens next spring.",
    # sport
    "The striker scored twice in the last ten minutes to win the match.",
    "Rain delayed the tennis final by almost three hours.",
    "She broke the national record in the four hundred metres hurdles.",
    "The team's coach was sacked after five consecutive defeats.",
    "Marathon runners usually slow down sharply after the thirtieth kilometre.",
    "The cricket match ended in a draw when bad light stopped play.",
    "He learned to swim at the age of forty and now competes in open water races.",
    "The referee's decision was overturned after a video review.",
    "Our local club has not won the league since nineteen eighty-six.",
    "Cyclists climbed the mountain pass in freezing sleet.",
    "The goalkeeper saved a penalty in the final minute of extra time.",
    # health and medicine
    "Regular exercise lowers the risk of heart disease.",
    "The clinic is open on weekdays from eight until six.",
    "He needs to take the antibiotics for a full ten days, even if he feels better sooner.",
    "Drinking enough water helps prevent headaches on hot days.",
    "The surgeon explained the risks of the operation in plain language.",
    "Sleep deprivation impairs memory, mood and reaction time.",
    "A sprained ankle usually heals within a few weeks with rest.",
    "The hospital is short of nurses on the night shift.",
    "Washing your hands with soap removes most common germs.",
    "Her allergy to peanuts means she checks every food label carefully.",
    "The pharmacy ran out of the flu vaccine by mid November.",
    # history and politics
    "The castle was besieged for six months and never captured.",
    "Parliament voted to delay the new law until next year.",
    "The ancient city was buried under volcanic ash and rediscovered centuries later.",
    "The treaty ended a war that had lasted nearly thirty years.",
    "Voters queued for hours outside the polling stations in the capital.",
    "The printing press made books cheaper and spread new ideas across Europe.",
    "The mayor promised to build more affordable housing near the railway station.",
    "Historians still argue about the causes of the empire's collapse.",
    "The minister resigned after the leaked emails were published.",
    "The old trade route carried silk, spices and stories between distant cities.",
    "Protesters gathered peacefully in the square to demand cleaner air.",
    # travel and places
    "The night train to the coast was cancelled because of flooding.",
    "Our hotel room overlooked a noisy street full of scooters.",
    "The museum is free on the first Sunday of every month.",
    "We got lost in the old town and found a tiny café by accident.",
    "Passports must be valid for at least six months after arrival.",
    "The ferry crossing takes about ninety minutes in calm weather.",
    "Tourists crowded the bridge to photograph the sunset over the river.",
    "The mountain village can only be reached on foot or by cable car.",
    "Our flight was delayed, so we slept on the airport floor.",
    "The desert gets surprisingly cold at night.",
    "They cycled along the canal from one end of the country to the other in two weeks.",
    # arts and culture
    "The orchestra tuned their instruments while the audience found their seats.",
    "Her first novel is about three sisters who inherit a failing vineyard.",
    "The film was shot in black and white on a tiny budget.",
    "Critics praised the play but few people bought tickets.",
    "The gallery's new exhibition pairs medieval manuscripts with modern comic books.",
    "He practises the violin for two hours every morning before work.",
    "The poem describes a city waking up slowly on a winter morning.",
    "The band's second album sounds nothing like their first.",
    "The mural on the school wall was painted by the students themselves.",
    "Audiences laughed so loudly that the actors had to pause.",
    "The library is digitising its collection of old maps and letters.",
    # education and work
    "The exam results will be published online next Friday.",
    "Students are asked to switch off their phones during lectures.",
    "The teacher explained fractions using slices of an imaginary cake.",
    "He finally finished his dissertation after four years of late nights.",
    "Our team works remotely and meets in person once a quarter.",
    "The job advert asked for five years of experience with a tool that is three years old.",
    "She was promoted to head of department last spring.",
    "Apprentices spend most of the week on site and one day at college.",
    "The school has started teaching basic programming to eight year olds.",
    "Please submit your expenses before the end of the month.",
    "The interview lasted an hour and covered everything from statistics to teamwork.",
    # emotions and relationships
    "I have never felt so relieved in my life.",
    "They argued about money for most of the evening.",
    "He was too proud to admit he had made a mistake.",
    "Her laughter filled the whole room.",
    "The old friends hugged for a long time at the station.",
    "She felt nervous before the speech but spoke calmly once she started.",
    "Loneliness can be as harmful to health as smoking.",
    "My brother and I have not spoken since the wedding.",
    "The puppy waited by the door every afternoon for the children to come home.",
    "Thank you so much for your kindness during a difficult year.",
    # animals
    "Cats sleep for up to sixteen hours a day.",
    "The zoo's elephants were moved to a larger sanctuary in the south.",
    "A fox has been raiding the bins behind the restaurant.",
    "Dolphins use distinct whistles to identify one another.",
    "The parrot can imitate the sound of the microwave perfectly.",
    "Ants follow chemical trails left by other members of their colony.",
    "The farmer keeps geese because they are louder than any guard dog.",
    "Whales were spotted close to the shore this morning.",
    # law and society
    "The court ruled that the dismissal had been unfair.",
    "New regulations require all rental homes to have working smoke alarms.",
    "The charity distributes food parcels to families every Saturday.",
    "Volunteers cleaned up the beach after the storm washed plastic ashore.",
    "The jury took three days to reach a verdict.",
    "Public transport will be free for everyone under eighteen from September.",
    "The council plans to plant ten thousand trees along the ring road.",
    "Crime in the district has fallen since the street lights were replaced.",
    # instructions and questions
    "Where did you put the scissors?",
    "How long does it take to drive to the airport at this time of day?",
    "Could you send me the slides from this morning's presentation?",
    "Shake the bottle well before use.",
    "Do not open the oven door during the first twenty minutes of baking.",
    "What time does the last bus leave the city centre on Sundays?",
    "Press and hold the power button for ten seconds to reset the device.",
    "Is it safe to swim in the river after heavy rain?",
    "Why do some people remember their dreams and others never do?",
    "Fill in the form in block capitals and sign at the bottom.",
    # longer and more complex sentences
    "Although the bridge had been inspected only a month earlier, engineers closed it after a "
    "cyclist reported a long crack along the main support beam.",
    "If the committee approves the proposal next week, construction of the new community centre "
    "could begin before the end of the summer holidays.",
    "The researchers, who spent three winters at a remote station in Antarctica, collected ice "
    "cores that record the climate of the last eight hundred thousand years.",
    "Because the train was running late and the connecting bus had already left, we ended up "
    "sharing a taxi with two strangers.",
    "After years of arguing about the colour of the front door, the couple finally agreed to paint"
    " it a deep shade of blue.",
    "Despite the warnings on every sign, a group of tourists climbed over the fence to take "
    "photographs at the edge of the cliff.",
    "The software engineer explained that the outage began when an expired security certificate "
    "stopped the payment service from talking to the bank.",
    "When the power cut hit the whole street, the neighbours brought candles and board games into "
    "the shared garden and made an evening of it.",
    # short ones
    "It is raining again.",
    "The meeting is cancelled.",
    "Dogs love long walks.",
    "Prices keep going up.",
    "She missed the bus.",
    "Nobody answered the door.",
    "The soup is cold.",
    "He won the lottery.",
    # miscellaneous
    "The lighthouse keeper kept a diary of every ship that passed.",
    "A single typo in the contract cost the firm thousands.",
    "The clock in the town square has been stuck at ten past four for years.",
    "Solar panels on the school roof now supply most of its electricity.",
    "The recipe calls for three eggs but we only had two.",
    "Someone left a handwritten note of thanks on the bus driver's seat.",
    "The elevator is out of order, so please use the stairs.",
    "Our garden shed is full of tools nobody knows how to use.",
    "The satellite images show the coastline eroding year after year.",
    "The choir rehearses in the church hall every Tuesday evening.",
    "A power outage left thousands of homes without heating.",
    "The baby finally fell asleep just before midnight.",
)

PAIRS: tuple[tuple[str, str], ...] = (
    ("The flight to Madrid was cancelled because of a storm.",
     "Bad weather forced the airline to scrap the plane to Madrid."),
    ("He quit his job to start his own bakery.",
     "He left his employer so that he could open a bread shop of his own."),
    ("The museum is closed for renovation until spring.",
     "Building work will keep the gallery shut until the spring."),
    ("My laptop will not turn on after the update.",
     "Since installing the update, my computer refuses to start."),
    ("Eating more vegetables can improve your health.",
     "A diet with plenty of vegetables is good for you."),
    ("The concert was sold out within minutes.",
     "All the tickets for the show were gone almost immediately."),
    ("The city is building a new bicycle lane along the river.",
     "A cycle path beside the river is under construction in the town."),
    ("She adopted a small grey cat from the animal shelter.",
     "She took home a little grey kitten from the rescue centre."),
    ("The price of petrol rose sharply this month.",
     "Fuel has become much more expensive in recent weeks."),
    ("The children were too excited to sleep on Christmas Eve.",
     "On the night before Christmas the kids were far too thrilled to fall asleep."),
    ("The river flooded the lower part of the town.",
     "Low-lying streets were underwater after the river overflowed."),
    ("The team lost the final by a single goal.",
     "They were beaten in the championship match by one goal."),
    ("Please turn off the lights when you leave the room.",
     "Switch the lamps off on your way out, please."),
    ("Scientists discovered a new species of frog in the rainforest.",
     "A previously unknown frog was found by researchers in the jungle."),
    ("The doctor told him to rest for a week.",
     "His physician advised him to take seven days off to recover."),
    ("The train was packed with commuters this morning.",
     "This morning's rail service was crowded with people going to work."),
    ("He is learning to play the piano.",
     "He has started taking piano lessons."),
    ("The company will cut five hundred jobs next year.",
     "Next year the firm plans to lay off five hundred employees."),
    ("It was so hot that the road began to melt.",
     "The heat was intense enough to soften the tarmac."),
    ("The library extended its opening hours during exams.",
     "During the exam period the library stays open longer."),
    ("Our internet connection keeps dropping in the evening.",
     "Every night the broadband cuts out again and again."),
    ("The author signed copies of her book at the shop.",
     "The writer autographed her novels for customers in the bookstore."),
)

SENTENCES: tuple[str, ...] = SINGLES + tuple(s for pair in PAIRS for s in pair)


def pair_indices() -> list[tuple[int, int]]:
    """Index pairs into ``SENTENCES`` for the paraphrase pairs."""
    base = len(SINGLES)
    return [(base + 2 * i, base + 2 * i + 1) for i in range(len(PAIRS))]


def check() -> None:
    """Raise if the set is too small, has duplicates or a sentence outside 4..30 words."""
    if len(SENTENCES) < 200:
        raise ValueError(f"only {len(SENTENCES)} sentences")
    if len(set(SENTENCES)) != len(SENTENCES):
        raise ValueError("duplicate sentences")
    for s in SENTENCES:
        n = len(s.split())
        if not 4 <= n <= 30:
            raise ValueError(f"{n} words: {s!r}")


if __name__ == "__main__":
    check()
    lengths = [len(s.split()) for s in SENTENCES]
    print(f"{len(SENTENCES)} sentences ({len(SINGLES)} singles, {len(PAIRS)} paraphrase pairs), "
          f"{min(lengths)}-{max(lengths)} words, mean {sum(lengths) / len(lengths):.1f}")
