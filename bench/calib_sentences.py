"""Calibration sentences for the MiniLM recovery benchmark (bench_recovery.py minilm).

Written for this benchmark, as bench/sentences.py was, and disjoint from it: recovery refits
weights on these, and quality is measured on bench/sentences.py, which no statistic of the
run sees. Everyday English over many topics and lengths, so the calibration data is of the
same kind as the evaluation data without being it. `check()` asserts the two sets share no
sentence.
"""

from __future__ import annotations

CALIB_SENTENCES: tuple[str, ...] = (
    # home and daily routine
    "The alarm went off twice before anyone got out of bed.",
    "She keeps a spare key under the blue flowerpot by the door.",
    "Our washing machine shakes so hard that it walks across the floor.",
    "He always reads the last page of a novel first.",
    "The hallway light flickers whenever someone runs the microwave.",
    "We repainted the fence on Saturday and it rained on Sunday.",
    "My sister labels every jar in her pantry with the date she opened it.",
    "There is a draught coming from somewhere behind the bookcase.",
    "The cat sleeps on the warm lid of the printer.",
    "Somebody left the garden gate open and the dog wandered off.",
    "I need to return these library books before Thursday.",
    "The upstairs neighbours practise the trumpet every evening at seven.",
    "Could you pick up some bread on your way home?",
    "The boiler makes a knocking sound when the heating comes on.",
    "We finally hung the picture that had leaned against the wall for a year.",
    "His socks never match, and he says that is on purpose.",
    # food
    "Roast the peppers until their skins blister and turn black.",
    "The café on the corner makes the best cinnamon rolls in town.",
    "Add the eggs one at a time, beating well after each.",
    "Leftover rice should be cooled quickly and kept in the fridge.",
    "Their wedding cake had five tiers and tasted mostly of almonds.",
    "A pinch of sugar takes the sharp edge off a tomato sauce.",
    "The market sells cheese from farms no more than thirty miles away.",
    "He eats porridge for breakfast every single day of the year.",
    "Soak the beans overnight, then simmer them for two hours.",
    "The soup was too spicy for the children, so we added yoghurt.",
    "Strawberries taste better when they have not been in the fridge.",
    "The bakery sold out of croissants before nine o'clock.",
    # work and school
    "The meeting was moved to Wednesday because the manager is travelling.",
    "Please send me the final version of the report by Friday noon.",
    "Our team missed the deadline by two days but the client did not mind.",
    "The new intern asks excellent questions.",
    "Exams start next week and the library is open until midnight.",
    "She teaches chemistry at a secondary school near the station.",
    "The printer on the third floor has been out of toner for a week.",
    "He wrote his dissertation on medieval trade routes across the Baltic.",
    "Every employee must complete the safety training by the end of the month.",
    "The lecture hall was so cold that students kept their coats on.",
    "Our budget for the project was cut by a fifth at the last minute.",
    "The job advert asks for five years of experience in logistics.",
    "I spent the whole afternoon answering emails.",
    "The school trip to the museum was cancelled because of the strike.",
    # travel and places
    "The night train arrives in the capital just after sunrise.",
    "Our flight was delayed for three hours because of fog.",
    "The old town is best explored on foot.",
    "They rented a small cottage near the coast for the summer.",
    "The ferry to the islands only runs twice a week in winter.",
    "Remember to validate your ticket before boarding the tram.",
    "The hotel room overlooked a noisy square full of cafés.",
    "We got lost twice trying to find the campsite in the dark.",
    "The mountain pass is closed from November until late spring.",
    "He collects postcards from every city he visits.",
    "The border crossing was quicker than we expected.",
    "Luggage must not be left unattended anywhere in the terminal.",
    "The bridge was built in the fifteenth century and is still used by cars.",
    "From the top of the tower you can see three countries on a clear day.",
    # nature and weather
    "Frost covered the car windows this morning.",
    "The storm brought down power lines across the valley.",
    "Swallows return to the barn every April.",
    "A fox crossed the road right in front of our headlights.",
    "The forest smells of pine resin after a hot day.",
    "Coral reefs are home to about a quarter of all marine species.",
    "The tide goes out so far that you can walk to the island.",
    "Wild mushrooms appeared overnight after the heavy rain.",
    "Sand dunes shift a few metres every year in the prevailing wind.",
    "A rainbow stretched across the sky over the harbour.",
    "Wolves have returned to parts of the country after a century of absence.",
    "The maple trees turn bright red in the middle of October.",
    "Hedgehogs hibernate through the coldest months of the year.",
    "The wind was strong enough to knock over the recycling bins.",
    # science and health
    "Walking for half an hour a day keeps the joints supple.",
    "The researchers measured how quickly the ice sheet is thinning.",
    "Antibiotics do not work against viral infections.",
    "Plants turn sunlight, water and carbon dioxide into sugar.",
    "The new microscope can image individual proteins inside living cells.",
    "A good night's sleep helps the brain store new memories.",
    "The comet will be visible with the naked eye for about a week.",
    "Salt water conducts electricity much better than fresh water.",
    "Doctors recommend drinking water before you feel thirsty.",
    "The study followed ten thousand children from birth to adulthood.",
    "Magnets lose their strength when they are heated.",
    "Earthquakes are measured with instruments called seismometers.",
    "The patient recovered quickly after the operation.",
    "Genes carry the instructions for building proteins.",
    # technology
    "My phone battery barely lasts until lunchtime now.",
    "The website crashed under the traffic of the ticket sale.",
    "Back up your files before installing the new operating system.",
    "The app asks for permission to use the camera.",
    "Our internet connection drops every time it rains.",
    "He built a weather station from spare parts and a small computer.",
    "The software update added a dark mode and fixed several bugs.",
    "Passwords should be long and different for every account.",
    "The robot vacuum keeps getting stuck under the sofa.",
    "Engineers tested the bridge sensors for a whole year.",
    "The company moved its servers to a data centre in the north.",
    "I forgot to charge the camera before the trip.",
    "The spreadsheet formula returns an error when a cell is empty.",
    "Electric cars are becoming cheaper to buy and to run.",
    # society, news and money
    "The council voted to build a new swimming pool next to the park.",
    "Prices at the supermarket have risen sharply this year.",
    "Thousands of people marched through the city centre on Saturday.",
    "The gallery stays open late on Thursdays.",
    "Unemployment fell slightly in the last quarter.",
    "The election results will be announced late tonight.",
    "Local volunteers repaired the footpath along the canal.",
    "The bank closed its branch in our village last spring.",
    "Rents in the city have doubled in ten years.",
    "The charity raised enough money to build a new clinic.",
    "The mayor promised more buses on the night routes.",
    "Our pension fund invests mostly in government bonds.",
    # culture, sport and leisure
    "The orchestra played a symphony that nobody in the audience knew.",
    "She has read every book in the series at least twice.",
    "The match went to penalties after extra time.",
    "He learned to play the guitar by watching videos online.",
    "The film was long but the ending made it worth it.",
    "Our choir is performing at the cathedral at Christmas.",
    "The marathon route passes right under our window.",
    "The painting was sold at auction for a record price.",
    "We play board games every Friday evening.",
    "The theatre festival attracts visitors from all over the world.",
    "The goalkeeper saved two shots in the final minutes.",
    "She knits scarves for everyone in the family each winter.",
    "The band released its first album in nine years.",
    "Chess clubs have become popular again among teenagers.",
    # people and feelings
    "He was nervous before the interview but did very well.",
    "My grandfather tells the same jokes at every family dinner.",
    "She laughed so hard that she had to sit down.",
    "They have been friends since their first day at school.",
    "I was surprised by how calm everyone stayed.",
    "The baby finally fell asleep after an hour of singing.",
    "He apologised for being late and bought everyone coffee.",
    "Moving to a new country was harder than she had imagined.",
    "Our neighbour brings us plums from his garden every autumn.",
    "Nobody remembered where the spare umbrella was kept.",
    # longer sentences
    "After the factory closed, many families in the town had to move away to find work, and "
    "the high street slowly emptied of shops.",
    "The recipe says to let the bread rise for an hour, but in a cold kitchen it can easily "
    "take twice as long.",
    "Because the road was flooded, the bus took a long detour through the hills and we "
    "arrived almost an hour late.",
    "Scientists warn that warmer winters allow pests to survive in places where the frost "
    "used to kill them off.",
    "If you are travelling with small children, book seats near the front so that you can "
    "get off quickly.",
    "The museum's new wing, which opened last month, shows tools and toys from ordinary "
    "homes of the last two centuries.",
    "Although the team lost the final, the coach said she had never been prouder of her "
    "players.",
    "Most of the village still draws its water from a well that was dug more than three "
    "hundred years ago.",
    # short sentences
    "It is getting late.",
    "The shop is closed.",
    "Call me tomorrow.",
    "The kettle is empty.",
    "Nobody answered.",
    "The bus is full.",
    "Keep the change.",
    "It snowed overnight.",
)


def check() -> None:
    """No sentence twice, none shared with the evaluation sentences."""
    from sentences import SENTENCES

    assert len(set(CALIB_SENTENCES)) == len(CALIB_SENTENCES), "a calibration sentence repeats"
    shared = set(CALIB_SENTENCES) & set(SENTENCES)
    assert not shared, f"calibration sentences also used for evaluation: {sorted(shared)[:3]}"
