"""Knowledge retrieval of a custom GPT (issue 9): does the store find the passage that answers, does the bundled
model then answer, and how fast is it.

    .venv/bin/python bench/knowledge.py [--questions 300] [--answers 100] [--default-answers N] [--seed 0]
                                        [--variant CHUNK/OVERLAP/TOP_K ...] [--skip-answers] [--skip-speed]
                                        [--ingest-mb 10] [--latency-mb 7] [--quick] [--json]

1. A seeded, made-up world (`build_knowledge`): English and Chinese facts about invented bridges, villages,
   festivals, people and products ("The Quillfeather bridge in Varnholt was opened on 14 March 1873 by mayor Edda
   Lunsk.", "瓦恩霍的羽笔桥于1873年3月14日由市长艾达·伦斯克主持开通。"), spread over many files. Every fact a
   question asks about has distractors of its own shape that share its names (the same bridge in another town,
   another bridge in the same town, the same festival in another year, the same kettle brand with another model),
   so that retrieval has to find the right one among similar ones. Every answer string is in its own fact and in
   no other.
2. Recall@1 and recall@5 of the right chunk (one that holds the question's fact) through the store's real path:
   `create_gpt` with the spec's default retrieval settings (800-token chunks overlapping by 400, top_k 5) and the
   bundled model `default` (its tokenizer cuts the chunks), then `retrieve(conn, id, version, question, 5)`.
   Aim: recall@5 >= 0.95.
3. Answer accuracy: a seeded sample of `--answers` questions (half of each language) asked of the knowledge GPT on
   the bundled SmolLM2-135M-Instruct (`Assistant.answer`, greedy, 32 new tokens); right when the reply contains the
   answer string (case, whitespace and thousands separators normalized; an English date may come month first).
   Aim: >= 0.8. `--variant 200/100/3` (chunk tokens / overlap tokens / top_k, repeatable) runs recall and answers
   again for GPTs with other retrieval settings.
4. Speed: `create_gpt` on a generated ~`--ingest-mb` MB folder (chunks/s, MB/s, and how much of it is cutting);
   `retrieve` latency (p50, p99 over 300 questions) on that GPT, and in a store that holds only a GPT of
   ~`--latency-mb` MB (about 10,000 chunks); the share of a reply's time that retrieval and prompt building take
   (`Reply.timings`, over the answered questions).

GPTS_HOME is a temporary directory for the whole run (the bundled model is converted into it once).
`--quick` is a small run for tests and smoke checks (no answers, a small speed section).
"""

# No `from __future__ import annotations`: tests import this file without registering it as a module
# (tests/helpers.py bench_module), and dataclasses then cannot resolve string annotations.
import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGLISH, CHINESE = "en", "zh"
LANGUAGES = (ENGLISH, CHINESE)
TOP_K = 5  # the spec's default
MAX_NEW_TOKENS = 32
GPT_INSTRUCTIONS = ("You answer questions about the towns, people and products described in your knowledge files. "
                    "你根据知识文件回答关于城镇、人物和产品的问题。")


# -- the made-up world ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    language: str
    shape: str
    text: str
    question: str  # the question this fact answers (asked only for the facts chosen as questions)
    answer: str


@dataclass(frozen=True)
class Question:
    language: str
    shape: str
    question: str
    answer: str
    file: str  # the knowledge file's name as the store cites it (its path from the knowledge folder's parent)
    fact: str  # the sentence in that file that answers


@dataclass
class KnowledgeSet:
    folder: str  # the folder the files are in, as a spec names it
    files: dict[str, str]  # name as cited (knowledge/en/gazetteer-01.md) -> text
    questions: list[Question]
    facts: list[str] = field(default_factory=list)  # every fact in the files, questions' and distractors'

    def write(self, root: Path) -> Path:
        """The files under root; returns the knowledge folder (root/FOLDER) to name in a spec."""
        for name, text in self.files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root / self.folder

    @property
    def size(self) -> int:
        return sum(len(t.encode()) for t in self.files.values())


_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t", "th", "v", "w",
           "z", "kr", "fl", "sk"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
_CODAS = ["n", "r", "l", "s", "k", "m", "th", "sk", "nd", "rt", "x", "lm", "rn", "ck"]
_TOWN_ENDS = ["holt", "mere", "by", "wick", "stead", "ford", "vale", "thorpe", "dale", "haven", "moor", "ness"]
_RIVER_ENDS = ["a", "en", "is", "ene", "ora"]
_LANDMARK_A = ["Quill", "Ash", "Raven", "Iron", "Salt", "Thorn", "Elder", "Copper", "Wren", "Moss", "Stone",
               "Silver", "Frost", "Amber", "Heron", "Briar", "Lark", "Flint"]
_LANDMARK_B = ["feather", "wick", "gate", "crest", "wood", "more", "brook", "field", "spire", "hollow", "bell",
               "row"]
_FESTIVALS = ["Lantern", "Apple", "Salt", "Heron", "Copper", "Barley", "Ember", "Frost", "Tide", "Bell", "Kite",
              "Cider", "Mask", "Honey", "Plum", "Thistle", "Candle", "Harvest", "Fiddle", "Comet"]
_PROFESSIONS = ["clockmaker", "baker", "blacksmith", "weaver", "ship captain", "painter", "physician", "teacher",
                "carpenter", "poet", "glassblower", "cartographer", "beekeeper", "luthier"]
_ITEMS = ["kettle", "desk lamp", "coffee grinder", "hair dryer", "toaster", "ceiling fan", "sewing machine",
          "rice cooker"]
_COMPANY_ENDS = ["Works", "Foundry", "Brothers", "Instruments", "Appliances", "Manufacturing"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]

# Chinese: transliteration characters for invented names, and words with meaning for landmarks and festivals.
_ZH_SOUNDS = list("艾达伦斯克瓦恩霍尔特莫里纳贝卡罗塔维萨洛米拉诺德布格兰芬索利玛娜琳赫奥伊基泽雷兹昆默沃")
_ZH_LANDMARKS = ["羽笔", "银杉", "青石", "白鹭", "金穗", "松风", "铁砧", "雪松", "红枫", "月湖", "灰鸦", "琥珀",
                 "石楠", "柳絮", "铜铃", "苍鹰", "野莓", "晨露"]
_ZH_FESTIVALS = ["灯笼", "苹果", "海盐", "苍鹭", "铜钟", "麦穗", "霜花", "潮汐", "风筝", "苹果酒", "面具", "蜂蜜",
                 "李子", "蓟花", "蜡烛", "丰收", "提琴", "彗星"]
_ZH_PROFESSIONS = ["钟表匠", "面包师", "铁匠", "织布工", "船长", "画家", "医生", "教师", "木匠", "诗人", "吹玻璃匠",
                   "制图师", "养蜂人", "制琴师"]
_ZH_ITEMS = ["电水壶", "台灯", "磨豆机", "吹风机", "烤面包机", "吊扇", "缝纫机", "电饭煲"]
_ZH_COMPANY_ENDS = ["工坊", "制造厂", "电器公司", "兄弟公司", "器械厂"]
_ZH_TOWN_ENDS = ["堡", "镇", "屯", "坪", "湾", "集"]

SHAPES = ("bridge", "village", "festival", "person", "product")


class World:
    """Invented names and values, drawn from a seeded random generator. With `unique`, every value that can be an
    answer (dates, numbers, prices, person, river and company names) is new each time it is drawn, so that an
    answer is in its own fact and in no other."""

    def __init__(self, rng: random.Random, unique: bool = True):
        self.rng, self.unique = rng, unique
        self.used: set[str] = set()

    def _fresh(self, make: Callable[[], str]) -> str:
        for _ in range(10_000):
            value = make()
            if not self.unique:
                return value
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("ran out of fresh values")

    def _word(self, syllables: int, end: Sequence[str] = ()) -> str:
        r = self.rng
        text = "".join(r.choice(_ONSETS) + r.choice(_VOWELS) for _ in range(syllables))
        return (text + r.choice(end if end else _CODAS)).capitalize()

    # English
    def town(self) -> str:
        return self._word(1) + self.rng.choice(_TOWN_ENDS)

    def person(self) -> str:
        # First names end in a vowel, last names in a consonant: neither is ever a prefix of a longer one of its kind
        # followed by a space or a full stop.
        return self._fresh(lambda: f"{self._word(1, _VOWELS)} {self._word(2)}")

    def river(self) -> str:
        return self._fresh(lambda: self._word(1, _RIVER_ENDS))

    def company(self) -> str:
        return self._fresh(lambda: f"{self._word(2)} {self.rng.choice(_COMPANY_ENDS)}")

    def landmark(self) -> str:
        return self.rng.choice(_LANDMARK_A) + self.rng.choice(_LANDMARK_B)

    def brand(self) -> str:
        return self._word(1) + self.rng.choice(["ex", "ia", "on", "ar", "o"])

    def model_code(self) -> str:
        letters = self.rng.choice("KTRVMSPL") + (self.rng.choice("XZ") if self.rng.random() < 0.3 else "")
        return f"{letters}-{self.rng.randint(10, 99)}"

    def number(self) -> int:
        # 2,200 to 98,999: never a year (1700-2030) or a day of the month, so a number is in no date.
        return int(self._fresh(lambda: str(self.rng.randint(2200, 98999))))

    def price(self) -> str:
        return self._fresh(lambda: f"{self.rng.randint(12, 899)}.{self.rng.randint(1, 99):02d}")

    def date(self) -> tuple[int, int, int]:
        value = self._fresh(lambda: f"{self.rng.randint(1700, 1989)}-{self.rng.randint(1, 12)}-"
                                    f"{self.rng.randint(1, 28)}")
        year, month, day = map(int, value.split("-"))
        return year, month, day

    # Chinese
    def _zh(self, n: int) -> str:
        return "".join(self.rng.choice(_ZH_SOUNDS) for _ in range(n))

    def zh_town(self) -> str:
        return self._zh(2) + self.rng.choice(_ZH_TOWN_ENDS)

    def zh_person(self) -> str:
        return self._fresh(lambda: f"{self._zh(2)}·{self._zh(3)}")

    def zh_river(self) -> str:
        return self._fresh(lambda: self._zh(3))

    def zh_company(self) -> str:
        return self._fresh(lambda: self._zh(3) + self.rng.choice(_ZH_COMPANY_ENDS))

    def zh_brand(self) -> str:
        return self._zh(2)


def en_date(d: tuple[int, int, int]) -> str:
    return f"{d[2]} {_MONTHS[d[1] - 1]} {d[0]}"


def zh_date(d: tuple[int, int, int]) -> str:
    return f"{d[0]}年{d[1]}月{d[2]}日"


def make_fact(world: World, language: str, shape: str, keys: dict[str, Any], ask: int) -> tuple[Fact, dict[str, Any]]:
    """A fact of `shape` whose names are `keys` where given (fresh ones otherwise), and the question number `ask`
    of its shape (0 or 1) with its answer. Returns the keys it used, for siblings to share."""
    w, r = world, world.rng
    zh = language == CHINESE
    k = dict(keys)
    if shape == "bridge":
        k.setdefault("landmark", r.choice(_ZH_LANDMARKS) if zh else w.landmark())
        k.setdefault("town", w.zh_town() if zh else w.town())
        date, person = w.date(), (w.zh_person() if zh else w.person())
        if zh:
            text = f"{k['town']}的{k['landmark']}桥于{zh_date(date)}由市长{person}主持开通。"
            asks = [(f"{k['town']}的{k['landmark']}桥是哪一天开通的？", zh_date(date)),
                    (f"哪位市长主持开通了{k['town']}的{k['landmark']}桥？", person)]
        else:
            text = f"The {k['landmark']} bridge in {k['town']} was opened on {en_date(date)} by mayor {person}."
            asks = [(f"When was the {k['landmark']} bridge in {k['town']} opened?", en_date(date)),
                    (f"Which mayor opened the {k['landmark']} bridge in {k['town']}?", person)]
    elif shape == "village":
        k.setdefault("town", w.zh_town() if zh else w.town())
        river, people = (w.zh_river() if zh else w.river()), w.number()
        if zh:
            text = f"{k['town']}村位于{river}河畔，共有{people}名居民。"
            asks = [(f"{k['town']}村有多少名居民？", str(people)), (f"{k['town']}村位于哪条河畔？", f"{river}河")]
        else:
            text = f"The village of {k['town']} lies on the river {river} and has {people:,} inhabitants."
            asks = [(f"How many inhabitants does the village of {k['town']} have?", f"{people:,}"),
                    (f"On which river does the village of {k['town']} lie?", river)]
    elif shape == "festival":
        k.setdefault("festival", r.choice(_ZH_FESTIVALS) if zh else r.choice(_FESTIVALS))
        k.setdefault("town", w.zh_town() if zh else w.town())
        k["year"] = keys.get("year") or r.randint(1990, 2024)
        month, visitors = r.randint(1, 12), w.number()
        if zh:
            text = f"{k['year']}年{month}月，{k['town']}的{k['festival']}节吸引了{visitors}名游客。"
            asks = [(f"{k['year']}年{k['town']}的{k['festival']}节吸引了多少名游客？", str(visitors))]
        else:
            text = (f"The {k['festival']} festival in {k['town']} was held in {_MONTHS[month - 1]} {k['year']} and "
                    f"drew {visitors:,} visitors.")
            asks = [(f"How many visitors did the {k['festival']} festival in {k['town']} draw in {k['year']}?",
                     f"{visitors:,}")]
    elif shape == "person":
        k.setdefault("profession", r.choice(_ZH_PROFESSIONS) if zh else r.choice(_PROFESSIONS))
        k.setdefault("town", w.zh_town() if zh else w.town())
        person, date = (w.zh_person() if zh else w.person()), w.date()
        if zh:
            text = f"{k['profession']}{person}来自{k['town']}，出生于{zh_date(date)}。"
            asks = [(f"{k['profession']}{person}是哪一天出生的？", zh_date(date))]
        else:
            text = f"{person}, the {k['profession']} from {k['town']}, was born on {en_date(date)}."
            asks = [(f"When was {person}, the {k['profession']}, born?", en_date(date))]
    elif shape == "product":
        k.setdefault("brand", w.zh_brand() if zh else w.brand())
        k.setdefault("item", r.choice(_ZH_ITEMS) if zh else r.choice(_ITEMS))
        k.setdefault("model", w.model_code())
        town, company, price = (w.zh_town() if zh else w.town()), (w.zh_company() if zh else w.company()), w.price()
        name = f"{k['brand']}牌{k['model']}型{k['item']}" if zh else f"{k['brand']} {k['model']} {k['item']}"
        if zh:
            text = f"{name}由{town}的{company}生产，售价{price}元。"
            asks = [(f"{name}售价多少元？", price), (f"{name}是哪家公司生产的？", company)]
        else:
            text = f"The {name}, made by {company} in {town}, sells for {price} crowns."
            asks = [(f"How much does the {name} cost?", price), (f"Which company makes the {name}?", company)]
    else:
        raise ValueError(shape)
    question, answer = asks[ask % len(asks)]
    return Fact(language, shape, text, question, answer), k


# Which names a distractor shares with the fact it is made for: each shape has its similar-but-different ones.
_SIBLING_KEYS = {
    "bridge": [("landmark",), ("town",), ("landmark",)],
    "village": [(), (), ()],
    "festival": [("festival", "town"), ("festival",), ("town",)],
    "person": [("profession", "town"), ("profession",), ("town",)],
    "product": [("brand", "item"), ("model", "item"), ("brand",)],
}


def build_knowledge(seed: int = 0, questions: int = 300, distractors: int = 3, files_per_language: int = 12,
                    folder: str = "knowledge") -> KnowledgeSet:
    """A knowledge folder and its questions, half English and half Chinese; the same seed gives the same set."""
    rng = random.Random(seed)
    world = World(rng)
    facts: dict[str, list[Fact]] = {ENGLISH: [], CHINESE: []}
    asked: list[Fact] = []
    for i in range(questions):
        language = LANGUAGES[i % 2]
        shape = SHAPES[(i // 2) % len(SHAPES)]
        fact, keys = make_fact(world, language, shape, {}, rng.randrange(2))
        asked.append(fact)
        facts[language].append(fact)
        for j in range(distractors):
            shared = _SIBLING_KEYS[shape][j % 3]
            if shape == "festival" and j == 0:  # the same festival in the same town, another year
                shared_keys = {"festival": keys["festival"], "town": keys["town"],
                               "year": keys["year"] + rng.choice([-2, -1, 1, 2])}
            else:
                shared_keys = {key: keys[key] for key in shared}
            sibling, _ = make_fact(world, language, shape, shared_keys, rng.randrange(2))
            facts[language].append(sibling)
    where: dict[str, str] = {}
    files: dict[str, str] = {}
    for language in LANGUAGES:
        bins: list[list[Fact]] = [[] for _ in range(files_per_language)]
        for fact in facts[language]:
            bins[rng.randrange(files_per_language)].append(fact)
        for n, chosen in enumerate(bins, 1):
            name = f"{folder}/{language}/gazetteer-{n:02d}.md" if language == ENGLISH else \
                f"{folder}/{language}/地方志-{n:02d}.md"
            rng.shuffle(chosen)
            files[name] = _document(rng, language, n, chosen)
            where.update({f.text: name for f in chosen})
    return KnowledgeSet(folder, files, [Question(f.language, f.shape, f.question, f.answer, where[f.text], f.text)
                                for f in asked], [f.text for fs in facts.values() for f in fs])


def _document(rng: random.Random, language: str, number: int, facts: Sequence[Fact]) -> str:
    """Facts as a document: a heading, then paragraphs of one to four facts."""
    head = f"# Gazetteer of the Varn valley, volume {number}" if language == ENGLISH else f"# 瓦恩河谷地方志 第{number}卷"
    paragraphs, i = [], 0
    while i < len(facts):
        n = rng.randint(1, 4)
        paragraphs.append((" " if language == ENGLISH else "").join(f.text for f in facts[i:i + n]))
        i += n
    return "\n\n".join([head, *paragraphs]) + "\n"


def build_corpus(seed: int, megabytes: float, files: int = 40, questions: int = 300,
                 folder: str = "corpus") -> KnowledgeSet:
    """A large folder of the same kinds of facts (names repeat, answers are not unique), about half English and half
    Chinese by bytes, and a sample of questions about it: for timing, not for recall."""
    rng = random.Random(seed)
    world = World(rng, unique=False)
    target = int(megabytes * 1024 * 1024)
    per_file = target // files
    texts: dict[str, str] = {}
    asked: list[Question] = []
    for n in range(files):
        language = LANGUAGES[n % 2]
        name = f"{folder}/{language}/part-{n:03d}.md"
        chosen, size = [], 0
        while size < per_file:
            fact, _ = make_fact(world, language, SHAPES[rng.randrange(len(SHAPES))], {}, rng.randrange(2))
            chosen.append(fact)
            size += len(fact.text.encode()) + 1
        texts[name] = _document(rng, language, n, chosen)
        for fact in rng.sample(chosen, min(len(chosen), -(-questions // files))):
            asked.append(Question(language, fact.shape, fact.question, fact.answer, name, fact.text))
    return KnowledgeSet(folder, texts, asked[:questions])


# -- checks of a set -------------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lowercase, whitespace collapsed, thousands separators dropped (4,817 -> 4817)."""
    text = " ".join(text.lower().split())
    return re.sub(r"(?<=\d)[,，](?=\d{3}\b)", "", text)


def _holds(normalized_text: str, normalized_answer: str) -> bool:
    if normalized_answer not in normalized_text:
        return False
    a = re.escape(normalized_answer)
    return re.search(rf"(?<![0-9a-z]){a}(?![0-9a-z]|\.\d)", normalized_text) is not None


_EN_DATE = re.compile(rf"(\d+) ({'|'.join(_MONTHS)}) (\d{{4}})")


def contains_answer(text: str, answer: str) -> bool:
    """Whether `text` holds `answer`, normalized, not as part of a longer ASCII word or number (4817 is not in
    14817, 48.7 not in 48.75; 艾达·伦斯克 is in 市长艾达·伦斯克主持). An English date may also be written month
    first (June 22, 1864 for 22 June 1864)."""
    text = normalize(text)
    forms = [answer]
    if date := _EN_DATE.fullmatch(answer):
        day, month, year = date.groups()
        forms += [f"{month} {day}, {year}", f"{month} {day} {year}"]
    return any(_holds(text, normalize(form)) for form in forms)


def answer_clashes(knowledge: KnowledgeSet) -> list[tuple[Question, str]]:
    """(question, fact) for every fact other than the question's own that holds the question's answer."""
    facts = [(fact, normalize(fact)) for fact in knowledge.facts]
    return [(q, fact) for q in knowledge.questions for answer in [normalize(q.answer)] for fact, text in facts
            if fact != q.fact and _holds(text, answer)]


# -- through the store ---------------------------------------------------------------------------------------------


def knowledge_spec(name: str, knowledge: Sequence[str], files: int, chunk_tokens: int = 800,
                   overlap_tokens: int = 400, top_k: int = TOP_K, model: str = "default") -> Any:
    from gpts.spec import parse_spec

    return parse_spec({"name": name, "instructions": GPT_INSTRUCTIONS, "knowledge": list(knowledge), "model": model,
                       "retrieval": {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens, "top_k": top_k,
                                     "max_files": max(20, files)}})


def create(knowledge: KnowledgeSet, root: Path, name: str, **retrieval: Any) -> tuple[Any, float]:
    """The knowledge set written under root and a GPT created from it; (gpt, seconds create_gpt took)."""
    from gpts import store

    folder = knowledge.write(root)
    spec = knowledge_spec(name, [folder.name], len(knowledge.files), **retrieval)
    start = time.perf_counter()
    gpt = store.create_gpt(spec, base_dir=root)
    return gpt, time.perf_counter() - start


def chunk_count(conn: Any, gpt: Any) -> int:
    return conn.execute("SELECT count(*) FROM chunks c JOIN version_files vf ON vf.set_id = c.set_id "
                        "WHERE vf.gpt_id = ? AND vf.version = ?", (gpt.id, gpt.version)).fetchone()[0]


def recall(conn: Any, gpt: Any, questions: Iterable[Question], k: int = TOP_K) -> dict[str, Any]:
    """Recall@1 and recall@k of the chunk holding each question's fact, per language and overall; and the misses."""
    from gpts.store import retrieve

    hits: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    misses = []
    for q in questions:
        found = retrieve(conn, gpt.id, gpt.version, q.question, k)
        right = [p.file == q.file and q.fact in p.text for p in found]
        hits[q.language].append((any(right[:1]), any(right)))
        if not any(right[:1]):
            misses.append({"question": q.question, "shape": q.shape, "language": q.language,
                           "at": right.index(True) + 1 if any(right) else None,
                           "first": found[0].where() if found else None})
    result: dict[str, Any] = {}
    for key, group in [*sorted(hits.items()), ("all", [h for rows in hits.values() for h in rows])]:
        result[key] = {"n": len(group), "recall@1": sum(h[0] for h in group) / max(1, len(group)),
                       f"recall@{k}": sum(h[1] for h in group) / max(1, len(group))}
    for name, missed in [("first_misses_by_shape", misses), ("misses_by_shape", [m for m in misses if not m["at"]])]:
        by_shape: dict[str, int] = defaultdict(int)
        for m in missed:
            by_shape[f"{m['language']}/{m['shape']}"] += 1
        result[name] = dict(sorted(by_shape.items()))
    result["misses"] = [m for m in misses if not m["at"]][:10]
    result["first_misses"] = [m for m in misses if m["at"]][:10]
    return result


def answer_sample(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """n questions, half of each language (as far as there are), in a seeded order."""
    rng = random.Random(seed + 1)
    picked = []
    for i, language in enumerate(LANGUAGES):
        pool = [q for q in questions if q.language == language]
        picked += rng.sample(pool, min(len(pool), n // 2 + (n % 2 if i == 0 else 0)))
    return picked


def answers(lm: Any, gpt: Any, questions: Sequence[Question], max_new_tokens: int = MAX_NEW_TOKENS,
            progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Answer accuracy per language (the reply holds the answer string) and where a reply's time goes."""
    from gpts.assistant import Assistant
    from gpts.store import connect

    assistant = Assistant(gpt, lm, connect())
    right: dict[str, list[bool]] = defaultdict(list)
    timings: dict[str, list[float]] = defaultdict(list)
    wrong = []
    for i, q in enumerate(questions, 1):
        reply = assistant.answer([], q.question, temperature=0, max_new_tokens=max_new_tokens)
        ok = contains_answer(reply.text, q.answer)
        right[q.language].append(ok)
        for key in ("retrieval_ms", "prompt_ms", "generation_ms"):
            timings[key].append(reply.timings[key])
        timings["prompt_tokens"].append(reply.usage["prompt_tokens"])
        timings["passages"].append(len(reply.prompt.passages))
        if not ok:
            wrong.append({"question": q.question, "answer": q.answer, "reply": reply.text.strip()[:200],
                          "fact_in_prompt": any(q.fact in p.text for p in reply.prompt.passages)})
        if i % 10 == 0:
            progress(f"  {i}/{len(questions)} answered, {sum(map(sum, right.values()))} right")
    result: dict[str, Any] = {}
    for key, group in [*sorted(right.items()), ("all", [x for rows in right.values() for x in rows])]:
        result[key] = {"n": len(group), "accuracy": sum(group) / max(1, len(group))}
    total = [r + p + g for r, p, g in zip(timings["retrieval_ms"], timings["prompt_ms"], timings["generation_ms"])]
    result["timings"] = {
        "retrieval_ms_p50": statistics.median(timings["retrieval_ms"]),
        "prompt_ms_p50": statistics.median(timings["prompt_ms"]),
        "generation_ms_p50": statistics.median(timings["generation_ms"]),
        "prompt_tokens_mean": statistics.mean(timings["prompt_tokens"]),
        "passages_mean": statistics.mean(timings["passages"]),
        # Of all the replies' time together: retrieval and prompt building over retrieval + prompt + generation.
        "retrieval_share": sum(timings["retrieval_ms"]) / sum(total),
        "prompt_share": sum(timings["prompt_ms"]) / sum(total),
    }
    result["fact_in_prompt_when_wrong"] = sum(w["fact_in_prompt"] for w in wrong)
    result["wrong"] = wrong[:12]
    return result


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def ingest(seed: int, megabytes: float, root: Path, name: str) -> dict[str, Any]:
    """create_gpt on a generated folder of ~megabytes: its time, chunks/s and MB/s, and how long cutting alone takes
    (extract + chunk_segments with the same tokenizer: the rest is hashing, copying and writing the database)."""
    from gpts.knowledge import chunk_segments, extract
    from gpts.registry import read_tokenizer
    from gpts.store import connect

    corpus = build_corpus(seed, megabytes)
    conn = connect()
    read_tokenizer("default")  # parsed once a process: not ingestion's time
    gpt, seconds = create(corpus, root, name)
    chunks = chunk_count(conn, gpt)
    tokenizer = read_tokenizer("default")
    start = time.perf_counter()
    for path in sorted((root / "corpus").rglob("*.md")):
        chunk_segments(extract(path), lambda t: len(tokenizer.encode(t, add_special=False)))
    cutting = time.perf_counter() - start
    mb = corpus.size / 2**20
    return {"files": len(corpus.files), "mb": mb, "chunks": chunks, "seconds": seconds, "chunks_per_s": chunks / seconds,
            "mb_per_s": mb / seconds, "cutting_seconds": cutting, "gpt": gpt, "corpus": corpus}


def latency(conn: Any, gpt: Any, questions: Sequence[Question], repeats: int = 1) -> dict[str, Any]:
    """retrieve() wall time per question (ms), overall and per language, after 20 questions to warm up."""
    from gpts.store import retrieve

    for q in questions[:20]:
        retrieve(conn, gpt.id, gpt.version, q.question, TOP_K)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for q in questions:
            start = time.perf_counter()
            retrieve(conn, gpt.id, gpt.version, q.question, TOP_K)
            times[q.language].append((time.perf_counter() - start) * 1000)
    every = [t for group in times.values() for t in group]
    return {"queries": len(every), "p50_ms": percentile(every, 50), "p99_ms": percentile(every, 99),
            "mean_ms": statistics.mean(every),
            **{f"p50_ms_{language}": percentile(group, 50) for language, group in sorted(times.items())}}


# -- the run -------------------------------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def parse_variant(text: str) -> dict[str, int]:
    chunk, overlap, top_k = (int(x) for x in text.split("/"))
    return {"chunk_tokens": chunk, "overlap_tokens": overlap, "top_k": top_k}


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"seed": args.seed, "load_before": load_average()}
    home = os.environ.get("GPTS_HOME")
    with tempfile.TemporaryDirectory(prefix="gpts-bench-knowledge-") as tmp:
        try:
            os.environ["GPTS_HOME"] = str(Path(tmp) / "home")  # never ~/.gpts
            _measure(args, Path(tmp), results, log)
        finally:
            if home is None:
                os.environ.pop("GPTS_HOME", None)
            else:
                os.environ["GPTS_HOME"] = home
    results["load_after"] = load_average()
    return results


def _measure(args: argparse.Namespace, tmp_path: Path, results: dict[str, Any], log: Callable[[str], None]) -> None:
    from gpts.registry import read_tokenizer
    from gpts.store import connect

    conn = connect()
    read_tokenizer("default")

    knowledge = build_knowledge(args.seed, args.questions, files_per_language=args.files)
    clashes = answer_clashes(knowledge)
    log(f"{len(knowledge.questions)} questions, {len(knowledge.facts)} facts in {len(knowledge.files)} files "
        f"({knowledge.size / 1024:.0f} KB); answers found in another fact: {len(clashes)}")
    settings = [("default", {})] + [(v, parse_variant(v)) for v in args.variant]
    gpts_made = {}
    results["recall"] = {}
    for label, retrieval in settings:
        root = tmp_path / f"set-{len(gpts_made)}"
        gpt, _ = create(knowledge, root, f"Varn valley {len(gpts_made)}", **retrieval)
        gpts_made[label] = gpt
        top_k = gpt.spec.retrieval.top_k
        r = recall(conn, gpt, knowledge.questions, max(top_k, TOP_K))
        r["chunks"] = chunk_count(conn, gpt)
        r["settings"] = f"{gpt.spec.retrieval.chunk_tokens}/{gpt.spec.retrieval.overlap_tokens}/{top_k}"
        results["recall"][label] = r
        log(f"recall [{r['settings']}], {r['chunks']} chunks: " + ", ".join(
            f"{key} @1 {r[key]['recall@1']:.3f} @5 {r[key][f'recall@{max(top_k, TOP_K)}']:.3f}"
            for key in (*LANGUAGES, "all")) + f"; not found by shape {r['misses_by_shape']}, not first "
            f"{r['first_misses_by_shape']}")

    if args.answers and not args.skip_answers:
        from gpts.api import load

        lm = load("default")
        sample = answer_sample(knowledge.questions, args.answers, args.seed)
        results["answers"] = {}
        for label, gpt in gpts_made.items():
            asked = sample
            if label == "default" and args.default_answers is not None and args.default_answers < len(sample):
                asked = answer_sample(knowledge.questions, args.default_answers, args.seed)
            log(f"answering {len(asked)} questions with [{results['recall'][label]['settings']}] "
                f"(load {load_average()})")
            a = answers(lm, gpt, asked, args.max_new_tokens, progress=log)
            a["load"] = load_average()
            results["answers"][label] = a
            log("  accuracy: " + ", ".join(f"{key} {a[key]['accuracy']:.3f}" for key in (*LANGUAGES, "all")))

    if not args.skip_speed:
        log(f"ingesting ~{args.ingest_mb} MB (load {load_average()})")
        ing = ingest(args.seed + 100, args.ingest_mb, tmp_path / "ingest", "Ingest")
        results["ingestion"] = {k: v for k, v in ing.items() if k not in ("gpt", "corpus")}
        results["ingestion"]["load"] = load_average()
        results["latency"] = [_latency(conn, ing["gpt"], ing["corpus"], args)]
        # A store of one GPT of ~10,000 chunks: retrieval searches every GPT's chunks (one FTS table), so the
        # figure above also depends on the other GPTs in the store.
        log(f"building a store of one GPT from ~{args.latency_mb} MB (load {load_average()})")
        os.environ["GPTS_HOME"] = str(tmp_path / "latency-home")
        alone = connect()
        big = build_corpus(args.seed + 200, args.latency_mb)
        gpt, _ = create(big, tmp_path / "latency", "Latency")
        results["latency"].append(_latency(alone, gpt, big, args))
        alone.close()
    conn.close()


def _latency(conn: Any, gpt: Any, corpus: KnowledgeSet, args: argparse.Namespace) -> dict[str, Any]:
    result = latency(conn, gpt, corpus.questions, repeats=args.latency_repeats)
    result["chunks"] = chunk_count(conn, gpt)
    result["chunks_in_store"] = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    result["load"] = load_average()
    return result


def table(results: dict[str, Any]) -> str:
    lines = ["| measure | en | zh | all | aim |", "| --- | --- | --- | --- | --- |"]
    for label, r in results["recall"].items():
        k = max(TOP_K, int(r["settings"].split("/")[2]))
        tag = f"[{r['settings']}, {r['chunks']} chunks]"
        lines.append(f"| recall@1 {tag} | " + " | ".join(f"{r[x]['recall@1']:.3f}" for x in (*LANGUAGES, "all"))
                     + " | |")
        lines.append(f"| recall@{k} {tag} | " + " | ".join(f"{r[x][f'recall@{k}']:.3f}"
                                                           for x in (*LANGUAGES, "all")) + " | >= 0.95 |")
    for label, a in results.get("answers", {}).items():
        tag = f"[{results['recall'][label]['settings']}, n={a['all']['n']}]"
        lines.append(f"| answer accuracy {tag} | " + " | ".join(f"{a[x]['accuracy']:.3f}"
                                                               for x in (*LANGUAGES, "all")) + " | >= 0.8 |")
    out = ["\n".join(lines)]
    rows = []
    for label, a in results.get("answers", {}).items():
        t = a["timings"]
        rows.append(f"| reply [{results['recall'][label]['settings']}] | retrieval p50 {t['retrieval_ms_p50']:.1f} ms,"
                    f" prompt p50 {t['prompt_ms_p50']:.1f} ms, generation p50 {t['generation_ms_p50']:.0f} ms; "
                    f"{t['prompt_tokens_mean']:.0f} prompt tokens | retrieval {100 * t['retrieval_share']:.2f} % + "
                    f"prompt {100 * t['prompt_share']:.2f} % of reply time (load {a['load']}) |")
    if "ingestion" in results:
        i = results["ingestion"]
        rows.append(f"| ingestion: create_gpt, {i['files']} files, {i['mb']:.1f} MB -> {i['chunks']:,} chunks | "
                    f"{i['seconds']:.1f} s: {i['chunks_per_s']:.0f} chunks/s, {i['mb_per_s']:.2f} MB/s (cutting "
                    f"alone {i['cutting_seconds']:.1f} s) | load {i['load']} |")
    for lat in results.get("latency", []):
        rows.append(f"| retrieve() at {lat['chunks']:,} chunks ({lat['chunks_in_store']:,} in the store), "
                    f"{lat['queries']} queries | p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (p50 en "
                    f"{lat.get('p50_ms_en', 0):.1f}, zh {lat.get('p50_ms_zh', 0):.1f}) | "
                    f"load {lat['load']} |")
    if rows:
        out.append("\n".join(["| speed | figure | |", "| --- | --- | --- |", *rows]))
    return "\n\n".join(out)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", type=int, default=300, help="Questions (half English, half Chinese).")
    parser.add_argument("--files", type=int, default=12, help="Knowledge files per language.")
    parser.add_argument("--answers", type=int, default=100, help="Questions asked of the model (0: none).")
    parser.add_argument("--default-answers", type=int, default=None,
                        help="Ask the GPT with the default retrieval settings only this many (its ~3,900-token "
                             "prompts are slow on a CPU); the --variant GPTs get --answers.")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--skip-answers", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--ingest-mb", type=float, default=10.0)
    parser.add_argument("--latency-mb", type=float, default=7.0,
                        help="Latency is also measured in a store of one GPT built from this many MB (7 MB: about "
                             "10,000 chunks at the default retrieval settings).")
    parser.add_argument("--latency-repeats", type=int, default=1)
    parser.add_argument("--variant", action="append", default=[], metavar="CHUNK/OVERLAP/TOP_K",
                        help="Also measure a GPT with these retrieval settings, e.g. 200/100/3.")
    parser.add_argument("--quick", action="store_true",
                        help="Small sizes: 40 questions, no answers, 0.3 MB to ingest, 0.1 MB for latency.")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    if args.quick:
        args.questions, args.files, args.answers = 40, 3, 0
        args.ingest_mb, args.latency_mb = min(args.ingest_mb, 0.3), min(args.latency_mb, 0.1)
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    results = run(args, log)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        print()
        print(table(results))
        print(f"\nload average (1/5/15 min) before {results['load_before']}, after {results['load_after']}")
    return results


if __name__ == "__main__":
    main()
