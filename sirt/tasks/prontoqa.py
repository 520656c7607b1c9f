"""ProntoQA-style problems, generated: deductive reasoning over a made-up ontology.

ProntoQA (Saparov & He, 2023) asks whether a statement about an entity follows from a small
set of rules over fictional concepts, so world knowledge cannot answer it and the proof is
known. We generate our own instances of that design: an entity belongs to the first concept
of a chain ``c_0 -> c_1 -> ...`` ("Every c_0 is a c_1."), the last concept of the chain has
the queried property, the other concepts have properties of their own (true but irrelevant),
and a distractor concept outside the chain has the opposite property. ``hops`` counts the
rules a proof applies, so it is the difficulty level. Rows use the hub copy's format
(``context, question, options, answer`` letter) plus ``chain`` (the proof) and ``hops``, so
that one converter reads generated, local and hub rows alike.
"""

from __future__ import annotations

import itertools
import random

CONCEPTS = [
    "blicket", "dax", "wug", "fep", "tove", "zorb", "glim", "snarf", "quib", "vorp", "plonk", "trell",
    "yimp", "krell", "drom", "flurb", "mave", "norp", "skib", "thwomp", "jent", "lusk", "brix", "gorm",
]
PROPERTIES = [
    "bright", "cold", "fast", "heavy", "loud", "shy", "sweet", "wooden", "metallic", "transparent", "spicy",
    "happy", "kind", "large", "red", "blue", "sour", "small", "dull", "floral", "liquid", "nervous", "opaque",
    "rough",
]
ENTITIES = ["Alex", "Max", "Sam", "Rex", "Fae", "Polly", "Wren", "Stella", "Sally", "Jo"]
QUESTION = "Is the following statement true or false? {statement}"
OPTIONS = ["A) True", "B) False"]
MAX_HOPS = len(CONCEPTS) - 2  # the chain plus the distractor and its parent


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def is_a(rng: random.Random, sub: str, sup: str) -> str:
    """A subset rule, in one of ProntoQA's wordings."""
    return f"{rng.choice(['Every', 'Each'])} {sub} is {article(sup)}."


def has(rng: random.Random, concept: str, prop: str, positive: bool) -> str:
    """A property rule: every member of ``concept`` has (or lacks) ``prop``."""
    return f"{rng.choice(['Every', 'Each'])} {concept} is {'' if positive else 'not '}{prop}."


def statement(entity: str, prop: str, positive: bool) -> str:
    return f"{entity} is {'' if positive else 'not '}{prop}"


def generate_row(rng: random.Random, hops: int, row_id: str) -> dict:
    """One problem whose proof applies ``hops`` rules; the answer is True or False at random."""
    if not 1 <= hops <= MAX_HOPS:
        raise ValueError(f"ProntoQA hops must be in 1..{MAX_HOPS}, got {hops}")
    names = rng.sample(CONCEPTS, hops + 2)
    chain, distractor, distractor_parent = names[:hops], names[hops], names[hops + 1]
    props = rng.sample(PROPERTIES, hops)
    queried, positive = props[-1], rng.random() < 0.5
    entity = rng.choice(ENTITIES)
    links = [is_a(rng, a, b) for a, b in itertools.pairwise(chain)]
    facts = [f"{entity} is {article(chain[0])}.", *links]
    noise = {c: (p, rng.random() < 0.5) for c, p in zip(chain, props[:-1])}
    facts += [has(rng, c, p, sign) for c, (p, sign) in noise.items()]
    target = has(rng, chain[-1], queried, positive)
    facts += [target, has(rng, distractor, queried, not positive), is_a(rng, distractor, distractor_parent)]
    proof = [facts[0]]
    for i in range(1, hops):
        proof += [links[i - 1], f"So {entity} is {article(chain[i])}."]
    proof += [target, f"So {statement(entity, queried, positive)}."]
    answer_true = rng.random() < 0.5
    asked = statement(entity, queried, positive if answer_true else not positive)
    rng.shuffle(facts)
    return {
        "id": row_id,
        "context": " ".join(facts),
        "question": QUESTION.format(statement=asked + "."),
        "options": OPTIONS,
        "answer": "A" if answer_true else "B",
        "chain": " ".join(proof),
        "hops": hops,
    }


def generate(n: int, levels: list[int], seed: int) -> list[dict]:
    """``n`` rows with hops drawn uniformly from ``levels``; reproducible from ``seed``."""
    rng = random.Random(seed)
    return [generate_row(rng, rng.choice(levels), f"sirt-{seed}-{i}") for i in range(n)]
