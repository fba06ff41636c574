"""A deterministic generator of trn.json-format records: coherent product listings with the real file's quirks.

It makes the bundled `sample_data.json` (1,000 records) and the full-size files the benchmarks use
(2,248,619 records with the real length distribution). Titles and descriptions come from templates and
attribute lists over seven categories; each description restates its title's attributes (author, colour,
size, material, cast...), so a model fine-tuned on the sample learns a mapping a person can see. The quirks
(empty fields, every HTML entity form, scraping boilerplate, glued sentences, tags, placeholders, duplicates,
very long descriptions, foreign editions) appear at the rates measured on the real file.

    python -m product_qa.data.synthetic --records 1000 --seed 0 --out sample_data.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tqdm import tqdm

# Rates measured on the real trn.json by public analyses of it.
EMPTY_CONTENT = 0.333
EMPTY_TITLE = 0.056
ENTITY_CONTENT = 0.20
ENTITY_TITLE = 0.02
BOILERPLATE = 0.20
GLUED = 0.10
DOUBLE_SPACE = 0.10
TAGS = 0.02
DEGENERATE = 0.015
EXACT_DUPLICATE = 0.01
TITLE_DUPLICATE = 0.02
FOREIGN_EDITION = 0.01
LONG_CONTENTS_IN_SAMPLE = 4
MAX_LABEL = 1_305_264

FIRST = ("Anna", "James", "Maria", "David", "Sarah", "Thomas", "Elena", "Michael", "Laura", "Robert", "Grace",
         "Daniel", "Helen", "Peter", "Julia", "Samuel", "Clara", "Henry", "Rosa", "Victor", "Nora", "Oliver",
         "Alice", "Marcus", "Ingrid", "Felix", "Ruth", "Arthur", "Lucy", "Edward", "Irene", "Simon")
LAST = ("Whitfield", "Moreno", "Hartley", "Okafor", "Lindqvist", "Brennan", "Castellano", "Ashworth", "Nakamura",
        "Delacroix", "Pemberton", "Sokolov", "Fairbanks", "Quinlan", "Ravensworth", "Abernathy", "Kowalski",
        "Marchetti", "Holloway", "Greaves", "Tanaka", "Oduya", "Sinclair", "Vance", "Mercer", "Thornton")
ADJECTIVES = ("Silent", "Hidden", "Broken", "Golden", "Last", "Distant", "Forgotten", "Burning", "Winter",
              "Crimson", "Quiet", "Lost", "Secret", "Wild", "Iron", "Painted", "Midnight", "Summer", "Hollow")
NOUNS = ("Harbor", "Garden", "Letter", "Kingdom", "River", "Promise", "Island", "Orchard", "Lighthouse", "Map",
         "Crown", "Storm", "Bridge", "Journey", "Season", "Mirror", "Valley", "Compass", "Archive", "Tide")
PLACES = ("Lisbon", "Marrakesh", "Vermont", "Kyoto", "the Highlands", "Cornwall", "Patagonia", "New Orleans",
          "Prague", "the Yukon", "Sicily", "Alaska", "Istanbul", "the Outer Banks", "Havana", "Edinburgh")
GENRES = {"mystery": ("detective", "investigates a string of thefts"),
          "romance": ("florist", "falls for a stranger who keeps a dangerous secret"),
          "thriller": ("former intelligence officer", "races to stop a conspiracy"),
          "fantasy": ("young apprentice", "discovers a forbidden magic"),
          "historical novel": ("nurse", "survives the upheaval of a changing empire"),
          "family saga": ("eldest daughter", "holds her family together through three generations"),
          "adventure": ("ship's captain", "leads a desperate expedition across uncharted seas")}
NONFICTION = {"cookbook": "more than 120 recipes, from weeknight suppers to holiday feasts",
              "travel guide": "maps, walking routes and tips on where to eat and stay",
              "history": "letters, diaries and archives that bring the period to life",
              "biography": "interviews with family, friends and rivals",
              "field guide": "over 800 colour illustrations and range maps",
              "children's picture book": "bright illustrations and a gentle rhyming text"}
BOOK_FORMATS = ("Paperback", "Hardcover", "Mass Market Paperback", "Audio CD", "Board book")
REVIEWS = ("“{a_adj} read that grips from the first page.”", "“{Author} at the top of the game.”",
           "{a_adj} and moving story that readers will not soon forget.", "“Utterly {adj}.” — The Times",
           "Fans of the series will find plenty to love here — and newcomers too.")
REVIEW_ADJ = ("gripping", "luminous", "haunting", "wonderful", "compelling", "delightful", "absorbing")
MOVIE_GENRES = ("comedy", "drama", "western", "thriller", "documentary", "musical", "family film")
MOVIE_FORMATS = ("[VHS]", "(DVD)", "[Blu-ray]", "(Widescreen Edition)")
MUSIC_GENRES = ("jazz", "blues", "folk", "classical", "country", "soul", "indie rock", "bluegrass")
SONG_WORDS = ("Blue", "River", "Morning", "Heart", "Road", "Light", "Home", "Rain", "Dance", "Moon", "Fire")
BRANDS = ("Acme", "Northwind", "Bellweather", "Kestrel", "Maple & Finch", "Orion", "Tidewater", "Brightline",
          "Halcyon", "Summit", "Evergreen", "Copperleaf", "Lumen", "Bramble")
COLORS = ("Neon Pink", "Navy Blue", "Forest Green", "Charcoal Gray", "Crimson Red", "Ivory", "Black",
          "Sky Blue", "Lavender", "Mustard Yellow", "Burnt Orange", "White")
APPAREL = {"Ballet Tutu": ("tulle", "dance practice, recitals and performances"),
           "Crew Neck T-Shirt": ("cotton", "everyday wear and layering"),
           "Rain Jacket": ("waterproof nylon", "hiking, commuting and wet-weather walks"),
           "Knit Beanie": ("merino wool", "cold mornings and winter sports"),
           "Bib Overalls": ("denim", "play, gardening and casual days"),
           "Fleece Pullover": ("polar fleece", "camping trips and chilly evenings"),
           "Running Shorts": ("quick-dry polyester", "running, gym sessions and summer heat")}
AUDIENCES = ("Girls", "Boys", "Women's", "Men's", "Toddler", "Adult", "Unisex")
SIZES = ("Small", "Medium", "Large", "X-Large", "2T", "4T", "One Size")
TOYS = {"Wooden Train Set": ("{count} wooden pieces", "build tracks and bridges"),
        "Building Blocks": ("{count} interlocking blocks", "stack towers, houses and spaceships"),
        "Plush Bear": ("a matching blanket and a gift box", "cuddle at bedtime"),
        "Puzzle": ("{count} puzzle pieces", "build a colourful scene"),
        "Art Easel": ("a chalkboard, a paper roll and {count} chalks", "draw, paint and learn letters"),
        "Remote Control Car": ("a rechargeable battery and a remote", "race over grass and gravel"),
        "Doctor Play Kit": ("{count} play instruments", "role-play a visit to the doctor")}
HOME = {"Water Bottle": ("stainless steel", "750 ml", "keeps drinks cold for 24 hours and hot for 12"),
        "Chef's Knife": ("high-carbon steel", "8-inch", "slices, dices and minces with ease"),
        "Dutch Oven": ("enameled cast iron", "5.5-quart", "braises, bakes bread and simmers stews"),
        "Throw Blanket": ("cotton knit", "50 x 60 inch", "adds warmth to a sofa or bed"),
        "Cutting Board": ("bamboo", "18 x 12 inch", "is gentle on knife edges"),
        "Table Lamp": ("ceramic", "22-inch", "gives a warm reading light"),
        "French Press": ("borosilicate glass", "34 oz", "brews rich coffee in four minutes")}
ELECTRONICS = {"Bluetooth Speaker": ("12-hour battery", "fills a room with clear, balanced sound"),
               "Wireless Earbuds": ("active noise cancelling", "stay comfortable through long calls"),
               "USB-C Charger": ("65W fast charging", "powers a laptop and a phone at once"),
               "Smart Plug": ("voice control", "switches lamps and fans on a schedule"),
               "Portable SSD": ("1TB capacity", "moves large files in seconds"),
               "Webcam": ("1080p video", "keeps you sharp on video calls"),
               "E-Reader": ("glare-free display", "holds thousands of books")}
FOREIGN_TEMPLATES = {"Spanish": ("Una novela {adj_es} de {author} sobre la vida en {place}.",
                       "Edición en español, traducida con cuidado y fiel al original.",
                       "Un libro que atrapa desde la primera página."),
           "French": ("Un roman {adj_fr} de {author} qui se déroule à {place}.",
                      "Édition française, traduite avec soin.", "Une lecture captivante du début à la fin."),
           "German": ("Ein {adj_de} Roman von {author} über das Leben in {place}.",
                      "Deutsche Ausgabe, sorgfältig übersetzt.", "Ein Buch, das man kaum aus der Hand legt.")}
FILLER = ("It makes a thoughtful gift.", "Customers return to it again and again.",
          "Every detail has been considered with care.", "It is built to last for years of regular use.",
          "The result is both practical and a pleasure to own.", "Satisfaction is guaranteed by the maker.")

# Clean typographic characters, and how each entity style writes them.
_TYPOGRAPHIC = {"&": ("&#38;", "&#x26;", "&amp;", "&amp;", "&amp;amp;", "&"),  # first: later spellings hold "&"
                "’": ("&#8217;", "&#x2019;", "&rsquo;", "&#x92;", "&amp;#8217;", "'"),
                "“": ("&#8220;", "&#x201C;", "&ldquo;", "&#147;", "&amp;#8220;", '"'),
                "”": ("&#8221;", "&#x201D;", "&rdquo;", "&#148;", "&amp;#8221;", '"'),
                "—": ("&#8212;", "&#x2014;", "&mdash;", "&#151;", "&amp;mdash;", "--"),
                "–": ("&#8211;", "&#x2013;", "&ndash;", "&#150;", "&amp;#8211;", "-"),
                "…": ("&#8230;", "&#x2026;", "&hellip;", "&#133;", "&amp;#8230;", "..."),
                "é": ("&#233;", "&#xE9;", "&eacute;", "&eacute;", "&amp;eacute;", "e")}
ENTITY_STYLES = ("decimal", "hex", "named", "cp1252", "double")
PLAIN = len(ENTITY_STYLES)  # index of the ASCII spelling the real file uses when it has no entities


def _render(text: str, style: int) -> str:
    for char, spellings in _TYPOGRAPHIC.items():
        if char in text:
            text = text.replace(char, spellings[style])
    return text


@dataclass(slots=True)
class _Product:
    """One product: its clean title, its description sentences, its format (for boilerplate)."""

    title: str
    sentences: list[str]
    fmt: str = "Paperback"
    is_book: bool = False
    author: str = ""


def _a(word: str, capital: bool = False) -> str:
    article = "an" if word[0].lower() in "aeiou" else "a"
    return f"{article.capitalize() if capital else article} {word}"


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _book(rng: random.Random) -> _Product:
    author = _person(rng)
    name = rng.choice((f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}",
                       f"{rng.choice(NOUNS)}s of {rng.choice(PLACES)}",
                       f"{_a(rng.choice(NOUNS), capital=True)} in {rng.choice(PLACES)}"))
    fmt = rng.choice(BOOK_FORMATS)
    adjective = rng.choice(REVIEW_ADJ)
    review = rng.choice(REVIEWS).format(adj=adjective, a_adj=_a(adjective, capital=True), Author=author)
    if rng.random() < 0.6:
        genre, (hero, plot) = rng.choice(tuple(GENRES.items()))
        place = rng.choice(PLACES)
        title = f"{name}: A Novel" if rng.random() < 0.3 else name
        sentences = [f"{author}’s {genre} follows {_a(hero)} in {place} who {plot}.",
                     f"Set against the {rng.choice(('storms', 'markets', 'back streets', 'harbors'))} of {place}, "
                     f"{name} is a story of loyalty, courage and second chances.", review]
    else:
        kind, contents = rng.choice(tuple(NONFICTION.items()))
        subject = rng.choice(PLACES)
        title = f"{name}: A {kind.title()} of {subject}" if kind != "children's picture book" else name
        sentences = [f"In this {kind}, {author} explores {subject} with {contents}.",
                     f"{author.split()[0]} draws on {rng.randint(5, 30)} years of experience — and it shows.", review]
    if rng.random() < 0.35:
        title = f"{title} ({fmt})"
    return _Product(title, sentences, fmt, True, author)


def _movie(rng: random.Random) -> _Product:
    lead, costar, director = _person(rng), _person(rng), _person(rng)
    genre, year = rng.choice(MOVIE_GENRES), rng.randint(1950, 2012)
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    fmt = rng.choice(MOVIE_FORMATS)
    place = rng.choice(PLACES)
    sentences = [f"{lead} and {costar} star in this {year} {genre} set in {place}.",
                 f"Directed by {director}, {name} runs {rng.randint(85, 160)} minutes.",
                 rng.choice((f"{_a(rng.choice(REVIEW_ADJ), capital=True)} film for the whole family.",
                             "This edition includes the original theatrical trailer.",
                             f"“{lead} has never been better.”"))]
    return _Product(f"{name} {fmt}", sentences, fmt.strip("[]()"))


def _music(rng: random.Random) -> _Product:
    artist = rng.choice((_person(rng), f"The {rng.choice(NOUNS)}s"))
    genre = rng.choice(MUSIC_GENRES)
    album = f"{rng.choice(SONG_WORDS)} {rng.choice(NOUNS)}"
    song = f"{rng.choice(SONG_WORDS)} {rng.choice(SONG_WORDS)}"
    sentences = [f"{album} is the {rng.choice(('debut', 'second', 'third', 'fifth'))} album from {artist}, "
                 f"with {rng.randint(9, 16)} tracks of {genre}.",
                 f"It includes the single “{song}” and was recorded in {rng.choice(PLACES)}.",
                 f"A must for fans of {genre} & {rng.choice([g for g in MUSIC_GENRES if g != genre])}."]
    return _Product(f"{album} by {artist} [Audio CD]" if rng.random() < 0.5 else album, sentences, "Audio CD")


def _apparel(rng: random.Random) -> _Product:
    item, (material, use) = rng.choice(tuple(APPAREL.items()))
    audience, color, size = rng.choice(AUDIENCES), rng.choice(COLORS), rng.choice(SIZES)
    brand = rng.choice(BRANDS)
    title = rng.choice((f"{audience} {item} {color}", f"{brand} {audience} {item}, {color}, {size}"))
    sentences = [f"High quality {material} {item.lower()} in {color.lower()}.",
                 f"Perfect for {use} — or just for fun!",
                 rng.choice((f"Available in size {size.lower()}; machine washable.",
                             "Soft, breathable and easy to care for.", f"Made by {brand} to last."))]
    return _Product(title, sentences)


def _toy(rng: random.Random) -> _Product:
    toy, (pieces, play) = rng.choice(tuple(TOYS.items()))
    brand, low = rng.choice(BRANDS), rng.randint(1, 6)
    high, count = low + rng.randint(2, 6), rng.choice((12, 24, 50, 100, 150))
    title = f"{brand} {toy} for Kids Ages {low}-{high}"
    sentences = [f"This {toy.lower()} from {brand} includes {pieces.format(count=count)}.",
                 f"Children can {play} while building fine motor skills — a kids’ favourite.",
                 f"Recommended for ages {low} to {high}; batteries not included." if "Car" in toy
                 else f"Recommended for ages {low} to {high}."]
    return _Product(title, sentences)


def _home(rng: random.Random) -> _Product:
    item, (material, size, benefit) = rng.choice(tuple(HOME.items()))
    brand, color = rng.choice(BRANDS), rng.choice(COLORS)
    title = f"{brand} {material.title()} {item}, {size}, {color}"
    sentences = [f"The {brand} {item.lower()} is made of {material} and {benefit}.",
                 f"It measures {size} and comes in {color.lower()}.",
                 rng.choice(("It’s built for everyday use.", "Backed by a lifetime warranty.",
                             "Easy to clean by hand & dry."))]
    return _Product(title, sentences)


def _electronics(rng: random.Random) -> _Product:
    item, (feature, benefit) = rng.choice(tuple(ELECTRONICS.items()))
    brand, model = rng.choice(BRANDS), f"{rng.choice('XSEM')}{rng.randint(100, 990)}"
    title = f"{brand} {model} {item} with {feature.title()}"
    sentences = [f"The {brand} {model} is a {item.lower()} with {feature} that {benefit}.",
                 "Setup takes minutes and it works with "
                 f"{rng.choice(('iOS and Android', 'Windows and macOS', 'most USB-C devices'))}.",
                 f"Includes a {rng.choice(('one-year', 'two-year'))} warranty & a quick start guide."]
    return _Product(title, sentences)


CATEGORIES = ((_book, 0.40), (_movie, 0.15), (_music, 0.10), (_apparel, 0.12), (_toy, 0.08), (_home, 0.08),
              (_electronics, 0.07))


def _foreign(rng: random.Random) -> _Product:
    language, (lead, middle, close) = rng.choice(tuple(FOREIGN_TEMPLATES.items()))
    author = _person(rng)
    name = f"{rng.choice(('El', 'La', 'Le', 'Der', 'Die'))} {rng.choice(NOUNS)}"
    first = lead.format(author=author, place=rng.choice(PLACES), adj_es=rng.choice(("fascinante", "íntima")),
                        adj_fr=rng.choice(("émouvant", "captivant")), adj_de=rng.choice(("bewegender", "großer")))
    return _Product(f"{name} ({language} Edition)", [first, middle, close], "Paperback", True, author)


def _boilerplate(product: _Product, rng: random.Random) -> str:
    note = rng.choice((f"--This text refers to the{product.fmt.replace(' ', '')}edition.",
                       "--This text refers to an out of print or unavailable edition of this title.",
                       f"--This text refers to an alternate{product.fmt.replace(' ', '')}edition."))
    if product.is_book and rng.random() < 0.5:
        year = rng.randint(1987, 2004)
        trade = rng.choice((f"Copyright {year} Reed Business Information, Inc.",
                            "Copyright &copy; Reed Business Information, a division of Reed Elsevier Inc. "
                            "All rights reserved.",
                            f"Copyright {year} Cahners Business Information, Inc."))
        return trade + (note if rng.random() < 0.7 else "")
    return note


def _long_text(product: _Product, rng: random.Random, target: int) -> str:
    parts = list(product.sentences)
    length = sum(len(p) + 1 for p in parts)
    while length < target:
        sentence = rng.choice(FILLER) if rng.random() < 0.5 else rng.choice(product.sentences)
        parts.append(sentence)
        length += len(sentence) + 1
    return " ".join(parts)


def _fit(text: str, target: int) -> str:
    """Cut at a word boundary near `target` characters."""
    if len(text) <= target:
        return text
    cut = text.rfind(" ", 0, target)
    return text[: cut if cut > target // 2 else target]


class _Generator:
    def __init__(self, n: int, seed: int, profile: str):
        if profile not in ("sample", "full"):
            raise ValueError(f"length_profile must be 'sample' or 'full', not {profile!r}")
        self.rng = random.Random(seed)
        self.n, self.profile = n, profile
        self.makers = [maker for maker, _ in CATEGORIES]
        self.weights = [weight for _, weight in CATEGORIES]
        picks = random.Random(seed + 1).sample(range(n), min(LONG_CONTENTS_IN_SAMPLE, n))
        self.long_at = set(picks) if profile == "sample" else set()
        self.recent: list[tuple[str, str]] = []  # earlier (title, content) pairs, for far-apart duplicates

    def uid(self, index: int) -> str:
        return f"{index * 7919 % 10**9:010d}" if index % 2 else f"B{self.rng.randrange(36**9):09X}"[:10]

    def product(self) -> _Product:
        if self.rng.random() < FOREIGN_EDITION:
            return _foreign(self.rng)
        return self.rng.choices(self.makers, self.weights)[0](self.rng)

    def content(self, product: _Product, index: int) -> str:
        rng = self.rng
        if index in self.long_at:
            text = "\n\n".join(_long_text(product, rng, 1500) for _ in range(rng.randint(14, 40)))
        elif self.profile == "full":
            target = int(min(max(rng.lognormvariate(math.log(398), 1.04), 5), 197_622))
            text = _fit(_long_text(product, rng, target), target)
        else:
            text = " ".join(product.sentences)
        if rng.random() < GLUED:
            text = text.replace(". ", ".", 1)
        if rng.random() < DOUBLE_SPACE:
            text = text.replace(". ", ".  ")
        if rng.random() < TAGS:
            text = rng.choice(("<br>", "<br />", "<p>")).join(text.split(". ", 1)) if ". " in text else f"<b>{text}</b>"
        if rng.random() < BOILERPLATE:
            text += _boilerplate(product, rng)
        return text

    def title(self, product: _Product) -> str:
        if self.profile != "full":
            return product.title
        target = int(min(max(self.rng.lognormvariate(math.log(54), 0.49), 3), 2000))
        title = product.title
        while len(title) < target:
            title += self.rng.choice((f", Volume {self.rng.randint(1, 9)}", f" - {self.rng.choice(PLACES)} Edition",
                                      f": {self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}s",
                                      f" by {product.author or _person(self.rng)}"))
        return _fit(title, max(target, len(product.title)))  # never cut into the product's own name

    def records(self) -> Iterator[dict]:
        rng = self.rng
        for index in range(self.n):
            roll = rng.random()
            if self.recent and roll < EXACT_DUPLICATE + TITLE_DUPLICATE:
                title, content = rng.choice(self.recent)
                if roll >= EXACT_DUPLICATE:  # same title, another description
                    content = " ".join(content.split(". ")[:1]) + "." if content else "New edition."
            else:
                product = self.product()
                title, content = self.title(product), self.content(product, index)
                ordinary = index not in self.long_at
                if ordinary and rng.random() < DEGENERATE:
                    content = rng.choice(("Book by", "VHS Tape", "Audio CD", title))
                style = rng.randrange(len(ENTITY_STYLES)) if rng.random() < ENTITY_CONTENT else PLAIN
                content = _render(content, style)
                title = _render(title, rng.randrange(len(ENTITY_STYLES)) if rng.random() < ENTITY_TITLE else PLAIN)
                if ordinary and rng.random() < EMPTY_CONTENT:
                    content = ""
                if ordinary and rng.random() < EMPTY_TITLE:
                    title = ""
                if title and ordinary:
                    self._remember(title, content)
            labels = rng.randint(1, 5)
            yield {"uid": self.uid(index), "title": title, "content": content,
                   "target_ind": sorted(rng.randrange(MAX_LABEL) for _ in range(labels)), "target_rel": [1] * labels}

    def _remember(self, title: str, content: str) -> None:
        if len(self.recent) < 2000:
            self.recent.append((title, content))
        else:
            self.recent[self.rng.randrange(2000)] = (title, content)


def generate_records(n: int, seed: int = 0, *, length_profile: str = "sample") -> Iterator[dict]:
    """n records in trn.json's format; the same (n, seed, length_profile) always gives the same records."""
    return _Generator(n, seed, length_profile).records()


def write_records(path: str, records: Iterable[dict]) -> int:
    """Write JSON Lines (gzip for a .gz path) atomically; returns the number of records."""
    temp = f"{path}.tmp-{os.getpid()}"
    opener = gzip.open if path.endswith(".gz") else open
    count = 0
    try:
        with opener(temp, "wt", encoding="utf-8", newline="\n") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=("sample", "full"), default="sample",
                        help="sample: natural template lengths; full: the real file's length distribution")
    parser.add_argument("--out", default="sample_data.json")
    args = parser.parse_args()
    started = time.perf_counter()
    records = tqdm(generate_records(args.records, args.seed, length_profile=args.profile), total=args.records,
                   unit="rec", desc="generate")
    count = write_records(args.out, records)
    print(f"wrote {count:,} records to {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB) "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
