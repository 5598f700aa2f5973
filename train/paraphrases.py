"""Queries in a person's own words, for measuring what the training captions cannot teach.

Every training caption is built from an emoji's name, short names and category, so Recall on those
captions says nothing about a user who types "a puppy" or "shades". These queries avoid the words
of the names they should find (a synonym, a paraphrase, a description); each lists every emoji a
person would accept in the results. The model's only source for them is the pretrained text side,
so this is the check that training kept it useful.
"""

from __future__ import annotations

import numpy as np

PARAPHRASE_QUERIES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (query, frozenset(accepted))
    for query, accepted in (
        ("a puppy", {"dog", "dog face", "poodle", "guide dog", "service dog"}),
        ("a kitten", {"cat", "cat face"}),
        (
            "a happy face",
            {
                "grinning face",
                "smiling face with open mouth",
                "smiling face with open mouth and smiling eyes",
                "grinning face with smiling eyes",
                "slightly smiling face",
                "smiling face with smiling eyes",
                "white smiling face",
                "smiling face with open mouth and tightly closed eyes",
            },
        ),
        (
            "a sad face",
            {
                "crying face",
                "loudly crying face",
                "frowning face",
                "slightly frowning face",
                "pensive face",
                "disappointed face",
                "disappointed but relieved face",
                "worried face",
                "face holding back tears",
            },
        ),
        ("a furious face", {"angry face", "pouting face", "serious face with symbols covering mouth"}),
        ("laughing so hard I cry", {"face with tears of joy", "rolling on the floor laughing"}),
        ("a face that is asleep", {"sleeping face", "sleepy face"}),
        ("a spooky spirit", {"ghost"}),
        ("poop", {"pile of poo"}),
        ("lip print", {"kiss mark"}),
        ("an infant", {"baby"}),
        ("an ape", {"monkey", "monkey face", "gorilla", "orangutan"}),
        ("a stallion", {"horse", "horse face"}),
        ("cattle", {"cow", "cow face", "ox", "water buffalo"}),
        ("a bunny", {"rabbit", "rabbit face"}),
        ("a piglet", {"pig", "pig face"}),
        ("a rodent", {"mouse", "mouse face", "rat", "hamster face", "chipmunk"}),
        ("a hen", {"chicken", "rooster"}),
        ("a songbird", {"bird"}),
        ("a goldfish", {"fish", "tropical fish"}),
        ("a tortoise", {"turtle"}),
        ("a serpent", {"snake"}),
        ("a humpback", {"whale", "spouting whale"}),
        ("a tarantula", {"spider"}),
        ("a houseplant", {"potted plant"}),
        ("a fir tree", {"evergreen tree", "christmas tree"}),
        ("a coconut tree", {"palm tree"}),
        ("an autumn leaf", {"fallen leaf", "maple leaf", "leaf fluttering in wind"}),
        ("a toadstool", {"mushroom"}),
        ("a loaf", {"bread"}),
        ("a burger", {"hamburger"}),
        ("gelato", {"ice cream", "soft ice cream", "shaved ice"}),
        ("a biscuit", {"cookie"}),
        ("a cake with candles", {"birthday cake"}),
        ("a cup of coffee", {"hot beverage"}),
        ("a pint of ale", {"beer mug"}),
        ("an atlas", {"world map"}),
        ("a clinic", {"hospital"}),
        ("a fire truck", {"fire engine"}),
        ("a cop car", {"police car", "oncoming police car"}),
        ("a sports car", {"racing car"}),
        ("a cab", {"taxi", "oncoming taxi"}),
        ("a motorbike", {"motorcycle"}),
        ("a bike", {"bicycle"}),
        ("a boat", {"ship", "sailboat", "canoe", "speedboat", "passenger ship", "motor boat"}),
        ("a chopper", {"helicopter"}),
        ("a jet", {"airplane"}),
        ("a spaceship", {"rocket"}),
        ("a hurricane", {"cyclone"}),
        ("an ice crystal", {"snowflake"}),
        ("flames", {"fire"}),
        ("an ocean wave", {"water wave"}),
        ("confetti", {"party popper", "confetti ball"}),
        ("an award", {"trophy", "first place medal", "sports medal", "military medal"}),
        ("a gamepad", {"video game", "joystick"}),
        ("a plush toy", {"teddy bear"}),
        ("spectacles", {"eyeglasses"}),
        ("shades", {"sunglasses", "smiling face with sunglasses"}),
        ("denim trousers", {"jeans"}),
        ("a diamond", {"gem stone", "ring"}),
        ("a melody", {"musical note", "multiple musical notes"}),
        ("earphones", {"headphone"}),
        ("a smartphone", {"mobile phone"}),
        ("a tv set", {"television"}),
        ("novels", {"books", "open book", "closed book"}),
        ("cash", {"money bag", "banknote with dollar sign", "money with wings", "banknote with euro sign"}),
        ("a padlock", {"lock"}),
        ("a vaccine shot", {"syringe"}),
        ("a medicine tablet", {"pill"}),
        ("a sofa", {"couch and lamp"}),
        ("a lavatory", {"toilet"}),
    )
)


def paraphrase_hit_rate(
    query_vectors: np.ndarray, image_vectors: np.ndarray, names: list[str], k: int = 5
) -> float:
    """Share of `PARAPHRASE_QUERIES` (rows of `query_vectors`, in order) with an accepted emoji among
    the `k` images most similar to them; `names[i]` is the emoji name of image row `i`."""
    top = np.argsort(-(query_vectors @ image_vectors.T), axis=1)[:, :k]
    hits = [
        any(names[i] in accepted for i in row)
        for row, (_, accepted) in zip(top, PARAPHRASE_QUERIES, strict=True)
    ]
    return float(np.mean(hits))
