"""Task maps derived from the WordNet hierarchy: ImageNet-1k's classes grouped under a few hypernyms.

``python -m kf_model.teachers task-map --out FILE.json`` writes the bank's everyday groups: each group is
every ImageNet class (its WordNet id, from ``timm.data.ImageNetInfo``) that has one of the group's root synsets
among its hypernyms (``@`` and instance ``@i`` pointers of WordNet 3.0's ``data.noun``, the file Debian's
``wordnet-base`` installs), minus the classes of the groups it excludes, so the derivation is reproducible from
the two files alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kf_model.errors import DataNotFoundError, InvalidConfigError
from kf_model.teachers.task_maps import MappedTask, TaskMap

WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
MAX_WORDNET_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class GroupRule:
    """A group: ImageNet classes under any of ``roots`` (WordNet noun offsets, with their first lemma as a check
    against typos), less the classes of the groups named in ``exclude``."""

    name: str
    description: str
    roots: tuple[tuple[str, str], ...]  # (offset, first lemma)
    exclude: tuple[str, ...] = ()


EVERYDAY_GROUPS = (
    GroupRule("dog", "a dog (any breed)", (("02084071", "dog"),)),
    GroupRule("cat", "a cat, house cat or big cat (felines)", (("02120997", "feline"),)),
    GroupRule("bird", "a bird", (("01503061", "bird"),)),
    GroupRule("insect", "an insect", (("02159955", "insect"),)),
    GroupRule("fish", "a fish", (("02512053", "fish"),)),
    GroupRule("reptile_or_amphibian", "a reptile or an amphibian",
              (("01661091", "reptile"), ("01627424", "amphibian"))),
    GroupRule("vehicle", "a vehicle (cars, boats, aircraft, carts...)", (("04524313", "vehicle"),)),
    GroupRule("fruit_or_vegetable", "a fruit or a vegetable",
              (("13134947", "fruit"), ("07707451", "vegetable"), ("07705931", "edible_fruit"))),
    GroupRule("food", "food or a dish (fruit and vegetables excluded)", (("00021265", "food"),),
              exclude=("fruit_or_vegetable",)),
    GroupRule("musical_instrument", "a musical instrument", (("03800933", "musical_instrument"),)),
    GroupRule("building", "a building", (("02913152", "building"),)),
    GroupRule("clothing", "clothing", (("03051540", "clothing"),)),
    GroupRule("flower", "a flower", (("11669921", "flower"),)),
)


def read_hypernyms(path: Path = WORDNET_NOUNS) -> tuple[dict[str, set[str]], dict[str, str]]:
    """({offset: direct hypernym offsets}, {offset: first lemma}) of WordNet's noun data file."""
    if not path.is_file():
        raise DataNotFoundError(f"WordNet's noun file {path} is missing: install Debian's wordnet-base "
                                "(make photo-deps) or pass --wordnet PATH")
    if path.stat().st_size > MAX_WORDNET_BYTES:
        raise InvalidConfigError(f"{path} is over {MAX_WORDNET_BYTES >> 20} MiB: not WordNet's data.noun")
    parents: dict[str, set[str]] = {}
    lemmas: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line or line.startswith(" "):
            continue  # the licence header
        fields = line.split(" | ", 1)[0].split()
        try:  # a garbage line would raise IndexError or ValueError from deep in here
            offset, words = fields[0], int(fields[3], 16)
            lemmas[offset] = fields[4]
            at = 4 + 2 * words
            count = int(fields[at])
            pointers = fields[at + 1: at + 1 + 4 * count]
            if not (len(offset) == 8 and offset.isdigit() and len(pointers) == 4 * count):
                raise ValueError
        except (IndexError, ValueError):
            raise InvalidConfigError(f"{path} is not a WordNet data.noun file: line {number} is not a synset "
                                     "line") from None
        parents[offset] = {pointers[i + 1] for i in range(0, len(pointers), 4)
                           if pointers[i] in ("@", "@i") and pointers[i + 2] == "n"}
    if not lemmas:
        raise InvalidConfigError(f"{path} is not a WordNet data.noun file: it holds no synset lines")
    return parents, lemmas


def ancestors(offset: str, parents: dict[str, set[str]]) -> set[str]:
    """Every hypernym of ``offset``, transitively (the synset itself included)."""
    seen, todo = {offset}, [offset]
    while todo:
        for parent in parents.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def derive_groups(wnids: Iterable[str], rules: Iterable[GroupRule], parents: dict[str, set[str]],
                  lemmas: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """{group: class indices} of classes given by WordNet ids (``n01440764``), in the rules' order."""
    rules = list(rules)
    for rule in rules:
        for offset, lemma in rule.roots:
            if offset not in lemmas:
                raise InvalidConfigError(f"group {rule.name}: WordNet has no noun synset {offset} ({lemma}): "
                                         "is the file WordNet 3.0's data.noun?")
            if lemmas[offset] != lemma:
                raise InvalidConfigError(f"group {rule.name}: WordNet synset {offset} is "
                                         f"{lemmas.get(offset)!r}, not {lemma!r}")
    lineage = [ancestors(w.lstrip("n"), parents) for w in wnids]
    groups: dict[str, tuple[int, ...]] = {}
    for rule in rules:
        roots = {offset for offset, _ in rule.roots}
        excluded = set().union(*(groups[name] for name in rule.exclude))
        groups[rule.name] = tuple(i for i, up in enumerate(lineage) if up & roots and i not in excluded)
        if not groups[rule.name]:
            raise InvalidConfigError(f"group {rule.name}: no class under {sorted(roots)}")
    return groups


def imagenet_task_map(wordnet: Path = WORDNET_NOUNS, rules: Iterable[GroupRule] = EVERYDAY_GROUPS,
                      command: str = "") -> TaskMap:
    """The one-vs-rest task map of ImageNet-1k's classes under ``rules`` (timm's class order)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = [info.index_to_label_name(i) for i in range(info.num_classes())]
    parents, lemmas = read_hypernyms(wordnet)
    rules = list(rules)
    groups = derive_groups(wnids, rules, parents, lemmas)
    tasks = tuple(MappedTask(r.name, {r.name: groups[r.name]}, r.description) for r in rules)
    roots = {r.name: [f"n{o} {lemma}" for o, lemma in r.roots] for r in rules}
    excluded = {r.name: list(r.exclude) for r in rules if r.exclude}
    return TaskMap(len(wnids), tasks, command, {"wordnet": "WordNet 3.0 data.noun (hypernym closure)",
                                                "roots": roots, "exclude": excluded})
