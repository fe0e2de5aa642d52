"""Everyday sentences for distillation and calibration in the sentence-embedding benchmark.

Written for this benchmark (not taken from any corpus), as bench/sentences.py and
bench/calib_sentences.py were, and disjoint from both: bench/sentences.py holds the evaluation
sentences, which must stay unseen by anything fitted on this text, and bench/calib_sentences.py
the existing calibration set. Unlabelled everyday English over many topics, registers, forms
and lengths (4 to 30 words), so that it is of the same kind as the evaluation data without
being it or paraphrasing it. `check()` asserts no sentence repeats and none is shared with
either of the other two sets.
"""

from __future__ import annotations

EVERYDAY_SENTENCES: tuple[str, ...] = (
    # home and household
    "The front door sticks in damp weather, so you have to push it with your shoulder.",
    "We keep the candles and matches in the drawer next to the cooker.",
    "My flatmate has never once emptied the bin without being asked.",
    "The radiator in the spare room only warms up at the bottom.",
    "Who moved the ironing board into the garage?",
    "There is a crack in the bathroom mirror that nobody admits to causing.",
    "Our smoke alarm goes off every time someone makes toast.",
    "The curtains in the living room are too short for the window.",
    "Dad fixed the wobbly table leg with a folded beer mat.",
    "Put the clean towels in the airing cupboard, please.",
    "The hoover has lost most of its suction since the dog moved in.",
    "Mum vacuums the stairs every Saturday morning at half past eight.",
    "We bought a second-hand sofa that smells faintly of oranges.",
    "The tap in the kitchen drips exactly once every four seconds.",
    "Don't leave wet clothes in the machine overnight.",
    "The basement floods a little whenever the storm drains overflow.",
    "I found a twenty pound note in the pocket of my winter coat.",
    "The loft is full of boxes labelled miscellaneous in my grandfather's handwriting.",
    "Our doorbell plays a tune that nobody in the family chose.",
    "The lodger pays his rent on the first Monday of each month.",
    "We have three remote controls and none of them turns on the television.",
    "She rearranges the furniture whenever she feels restless.",
    "The paint on the window frames is peeling after only two winters.",
    "Have you seen the instructions for the new oven?",
    "Our next-door neighbours are having an extension built, and the drilling starts at seven.",
    "The garden hose has a leak halfway along, so the roses get more water than the lawn.",
    "I can never find a pen that works when I need to write a message.",
    "He spent all Sunday assembling a wardrobe that came with forty-two screws.",
    "The fridge is covered in magnets from places we have never been.",
    "Nobody wants the bedroom above the garage because it is freezing in January.",
    # food and cooking
    "Slice the aubergine thinly and salt it for twenty minutes.",
    "My uncle makes a chilli so hot that guests need a glass of milk beside them.",
    "We had fish and chips on the seafront and fought off the seagulls.",
    "Is there any butter left, or did someone finish it?",
    "The recipe asks for buttermilk, but plain yoghurt with a little water works just as well.",
    "Her lemon drizzle cake won second prize at the village show.",
    "I burnt the first pancake, as I always do.",
    "The vegetable box this week had kale, beetroot and a single enormous cabbage.",
    "Stir the risotto constantly and add the stock one ladle at a time.",
    "We ordered too much food and took half of it home in boxes.",
    "The canteen serves the same lasagne every Wednesday.",
    "Never put a hot pan straight into cold water.",
    "The new Thai place on Bridge Street does an excellent green curry.",
    "Grandad grows his own potatoes and swears they taste better than the shop ones.",
    "Peel the ginger with the edge of a teaspoon rather than a knife.",
    "The picnic was ruined when a wasp got into the jam.",
    "Chill the dough for half an hour so it is easier to roll.",
    "Breakfast in that hotel was a slice of cold toast and a boiled egg.",
    "Do you take sugar in your tea?",
    "The farmers' market opens at eight but the best bread is gone by nine.",
    "Our toaster only browns one side of the bread.",
    "He has been vegetarian for ten years and still misses bacon sandwiches.",
    "A good stock needs bones, vegetables and a lot of patience.",
    "I packed sandwiches, two apples and a flask of coffee for the walk.",
    "The kids refused to eat anything green at dinner.",
    "Whisk the egg whites until they hold stiff peaks.",
    "The ice cream van plays its tune even in November.",
    "We celebrated her birthday with a huge plate of dumplings.",
    "That cafe charges extra for oat milk, which annoys my sister every time.",
    "The pie needs another ten minutes; the crust is still pale.",
    # work and office
    "The photocopier jammed five minutes before the board meeting.",
    "Can you join the call at three, or should we move it to tomorrow?",
    "Her manager approved the holiday request within an hour.",
    "Our office kitchen has a rota for washing up that nobody follows.",
    "The contract was signed on Tuesday after weeks of negotiation.",
    "He works nights at the warehouse and sleeps until two in the afternoon.",
    "Please save the spreadsheet with today's date in the file name.",
    "The new desks can be raised so that you can work standing up.",
    "I have six unread messages from the same client.",
    "The team celebrated the launch with pizza and warm lemonade.",
    "She handed in her notice and starts at a rival firm in June.",
    "Don't reply to all when only one person needs the answer.",
    "The night shift at the bakery begins at ten in the evening.",
    "Our finance department closes the books on the last working day of the month.",
    "The plumber quoted three hundred pounds and finished the job in forty minutes.",
    "Nobody knew who had booked the meeting room for the whole of Friday.",
    "He has worked at the same garage since he left school.",
    "The training course covers first aid, fire safety and manual handling.",
    "The open-plan office is so noisy that everyone wears headphones.",
    "Could you print two copies of the agenda for the visitors?",
    "The shop assistant stacked the shelves while the manager counted the till.",
    "My first job was delivering newspapers before school.",
    "The courier company is hiring extra drivers for the Christmas rush.",
    "The interview panel asked her to describe a time she had failed.",
    "The factory canteen closes at two, so the late shift brings packed lunches.",
    "Our boss sends emails at midnight and expects answers by breakfast.",
    "The receptionist knows every visitor by name.",
    "He lost an entire morning's work when the laptop froze.",
    "The architects presented three designs for the new library.",
    "Working from home means my cat attends all my meetings.",
)


def check() -> None:
    """No sentence twice, none shared with the evaluation or the calibration sentences."""
    from calib_sentences import CALIB_SENTENCES
    from sentences import SENTENCES

    assert len(set(EVERYDAY_SENTENCES)) == len(EVERYDAY_SENTENCES), "an everyday sentence repeats"
    shared = set(EVERYDAY_SENTENCES) & set(SENTENCES)
    assert not shared, f"everyday sentences also used for evaluation: {sorted(shared)[:3]}"
    shared = set(EVERYDAY_SENTENCES) & set(CALIB_SENTENCES)
    assert not shared, f"everyday sentences also in calib_sentences: {sorted(shared)[:3]}"


if __name__ == "__main__":
    check()
    print(f"{len(EVERYDAY_SENTENCES)} everyday sentences")
