"""The table schemas the SQL task draws from: `TRAIN_DOMAINS` for training, `HELD_OUT_DOMAINS`
only for evaluation (different tables, and many column names the model never trained on).

A column is a label (unique text, e.g. a person or a title), a category (few repeated values:
the column to filter on with `=` and to GROUP BY), or a number (distinct values within a table, so
ORDER BY ... LIMIT has no ties and every correct query returns the same rows).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from specialists.tasks.common import person

Kind = Literal["label", "category", "integer", "real"]
SQL_TYPES: dict[Kind, str] = {
    "label": "TEXT",
    "category": "TEXT",
    "integer": "INTEGER",
    "real": "REAL",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    words: tuple[tuple[str, ...], ...] = ()  # label: word lists to combine; category: values
    low: float = 0
    high: float = 0
    step: float = 1

    @property
    def phrase(self) -> str:
        """How a question names the column: `hire_year` is "hire year"."""
        return self.name.replace("_", " ")

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "real")

    def values(self, rng: random.Random, count: int) -> Sequence[str | int | float]:
        """`count` cell values: labels and numbers distinct, categories from 2-4 values."""
        if self.kind == "label":
            if not self.words:
                return _distinct(rng, count, lambda: person(rng))
            return _distinct(rng, count, lambda: " ".join(rng.choice(w) for w in self.words))
        if self.kind == "category":
            chosen = rng.sample(self.words[0], min(len(self.words[0]), rng.randint(2, 4)))
            cells = chosen + [rng.choice(chosen) for _ in range(count - len(chosen))]
            rng.shuffle(cells)
            return list(cells)
        slots = round((self.high - self.low) / self.step) + 1
        picks = rng.sample(range(slots), count)
        if self.kind == "integer":
            return [int(self.low + i * self.step) for i in picks]
        return [round(self.low + i * self.step, 2) for i in picks]


def _distinct(rng: random.Random, count: int, make: Callable[[], str]) -> list[str]:
    out: list[str] = []  # a list, not a set: a set's order changes with PYTHONHASHSEED
    while len(out) < count:
        value = make()
        if value not in out:
            out.append(value)
    return out


@dataclass(frozen=True)
class Domain:
    table: str
    noun: str  # plural, as questions say it: "How many employees ..."
    columns: tuple[Column, ...] = field(default_factory=tuple)

    def schema(self) -> str:
        cols = ", ".join(f"{c.name} {SQL_TYPES[c.kind]}" for c in self.columns)
        return f"CREATE TABLE {self.table} ({cols});"

    def of_kind(self, *kinds: Kind) -> list[Column]:
        return [c for c in self.columns if c.kind in kinds]


def label(name: str, *words: tuple[str, ...]) -> Column:
    return Column(name, "label", words)


def category(name: str, *values: str) -> Column:
    return Column(name, "category", (values,))


def integer(name: str, low: int, high: int, step: int = 1) -> Column:
    return Column(name, "integer", (), low, high, step)


def real(name: str, low: float, high: float, step: float) -> Column:
    return Column(name, "real", (), low, high, step)


ADJ = ("Silent", "Golden", "Hidden", "Broken", "Crimson", "Quiet", "Northern", "Lost", "Bright",
       "Distant", "Wild", "Hollow", "Velvet", "Iron", "Paper", "Frozen")  # fmt: skip
NOUN = ("River", "Garden", "Harbor", "Mirror", "Forest", "Lantern", "Voyage", "Horizon", "Tower",
        "Meadow", "Echo", "Island", "Winter", "Compass", "Canyon", "Orchard")  # fmt: skip
PLACE_A = ("North", "Port", "New", "Lake", "San", "Fort", "West", "Mount", "East", "Glen")
PLACE_B = ("Haven", "Ridge", "Field", "Bay", "Vale", "Crest", "Ford", "Point", "Brook", "Dale")
CITIES = ("Lyon", "Austin", "Osaka", "Denver", "Porto", "Leeds", "Perth", "Quito", "Oslo", "Pune")

TRAIN_DOMAINS: tuple[Domain, ...] = (
    Domain("employees", "employees", (
        label("name"),
        category("department", "Sales", "Engineering", "Marketing", "Support", "Finance"),
        integer("salary", 30000, 150000, 500),
        integer("hire_year", 1990, 2024),
    )),
    Domain("books", "books", (
        label("title", ADJ, NOUN), label("author"),
        category("genre", "Mystery", "Fantasy", "History", "Romance", "Science"),
        integer("pages", 90, 900), integer("publish_year", 1950, 2024),
    )),
    Domain("movies", "movies", (
        label("title", ADJ, NOUN), label("director"),
        category("genre", "Drama", "Comedy", "Horror", "Action", "Animation"),
        integer("release_year", 1970, 2024), real("rating", 1.0, 9.9, 0.1),
    )),
    Domain("products", "products", (
        label("name", ("Smart", "Mini", "Classic", "Ultra", "Eco", "Pro"),
              ("Lamp", "Kettle", "Chair", "Speaker", "Backpack", "Blender", "Clock", "Mug")),
        category("category", "Kitchen", "Office", "Outdoor", "Electronics"),
        real("price", 2.0, 500.0, 0.5), integer("stock", 0, 400),
    )),
    Domain("students", "students", (
        label("name"), category("major", "Biology", "Physics", "History", "Economics", "Art"),
        integer("age", 17, 40), real("gpa", 2.0, 4.0, 0.01),
    )),
    Domain("cities", "cities", (
        label("name", PLACE_A, PLACE_B),
        category("country", "Canada", "Brazil", "Kenya", "Japan", "Norway", "Chile"),
        integer("population", 20000, 3000000, 1000), integer("founded_year", 1500, 1990),
    )),
    Domain("cars", "cars", (
        label("model", ("Astra", "Civic", "Falcon", "Rover", "Comet", "Vista"),
              ("GT", "LX", "Sport", "Touring", "Hybrid")),
        category("maker", "Toyota", "Ford", "Honda", "Volvo", "Kia"),
        category("color", "Red", "Blue", "Black", "White", "Silver"),
        integer("model_year", 2000, 2024), integer("price", 5000, 60000, 100),
    )),
    Domain("songs", "songs", (
        label("title", ADJ, NOUN), label("artist"),
        category("genre", "Pop", "Jazz", "Rock", "Folk", "Soul"),
        integer("duration_seconds", 120, 420), integer("plays", 1000, 5000000),
    )),
    Domain("restaurants", "restaurants", (
        label("name", ADJ, ("Spoon", "Table", "Kitchen", "Bistro", "Grill", "Oven")),
        category("cuisine", "Italian", "Thai", "Mexican", "Indian", "French"),
        category("city", *CITIES[:6]),
        real("rating", 1.0, 5.0, 0.1), integer("seats", 10, 200),
    )),
    Domain("players", "players", (
        label("name"), category("team", "Eagles", "Tigers", "Wolves", "Sharks", "Falcons"),
        category("position", "Goalkeeper", "Defender", "Midfielder", "Forward"),
        integer("goals", 0, 60), integer("age", 17, 40),
    )),
    Domain("orders", "orders", (
        label("order_code", tuple(f"ORD-{n}" for n in range(1000, 1100))),
        label("customer"),
        category("status", "Pending", "Shipped", "Delivered", "Cancelled"),
        real("total", 5.0, 900.0, 0.25), integer("quantity", 1, 50),
    )),
    Domain("hotels", "hotels", (
        label("name", ADJ, ("Inn", "Lodge", "Hotel", "Suites", "Resort")),
        category("city", *CITIES[4:]), integer("nightly_rate", 40, 600), integer("rooms", 10, 500),
    )),
    Domain("courses", "courses", (
        label("title", ("Intro to", "Advanced", "Applied", "Modern"),
              ("Statistics", "Poetry", "Chemistry", "Robotics", "Design", "Law", "Music")),
        category("department", "Science", "Arts", "Engineering", "Law"),
        integer("enrolled", 5, 300), integer("fee", 100, 2000, 10),
    )),
    Domain("farms", "farms", (
        label("name", PLACE_B, ("Farm", "Ranch", "Acres", "Homestead")),
        category("region", "Northern", "Southern", "Coastal", "Highland"),
        integer("acres", 20, 5000), integer("cows", 0, 900),
    )),
    Domain("concerts", "concerts", (
        label("band", ("The",), ADJ, ("Wolves", "Keys", "Lights", "Strings", "Rivers")),
        category("venue", "Arena", "Stadium", "Theater", "Club"),
        real("ticket_price", 10.0, 250.0, 0.5), integer("attendance", 50, 60000),
    )),
)  # fmt: skip

HELD_OUT_DOMAINS: tuple[Domain, ...] = (
    Domain("patients", "patients", (
        label("name"), category("ward", "Cardiology", "Oncology", "Pediatrics", "Neurology"),
        integer("age", 1, 95), integer("stay_days", 1, 60),
    )),
    Domain("recipes", "recipes", (
        label("dish", ("Spicy", "Creamy", "Smoky", "Lemon", "Garlic", "Herb"),
              ("Noodles", "Curry", "Salad", "Soup", "Tacos", "Risotto", "Stew")),
        category("cuisine", "Korean", "Greek", "Peruvian", "Turkish"),
        integer("cook_minutes", 5, 180), integer("calories", 100, 1400),
    )),
    Domain("paintings", "paintings", (
        label("title", ADJ, NOUN), label("painter"),
        category("style", "Baroque", "Cubist", "Impressionist", "Modern"),
        integer("year_painted", 1500, 2020), integer("price", 1000, 9000000, 1000),
    )),
    Domain("museums", "museums", (
        label("name", ADJ, ("Gallery", "Museum", "Hall", "Archive")),
        category("city", *CITIES[2:8]), integer("visitors", 1000, 900000),
        integer("opened_year", 1800, 2020),
    )),
    Domain("gyms", "gyms", (
        label("name", PLACE_A, ("Fitness", "Gym", "Athletics", "Club")),
        category("district", "Downtown", "Harbor", "Uptown", "Old Town"),
        integer("members", 50, 5000), real("monthly_fee", 10.0, 150.0, 0.5),
    )),
    Domain("rivers", "rivers", (
        label("name", PLACE_B, ("River", "Creek", "Run", "Water")),
        category("continent", "Africa", "Asia", "Europe", "South America"),
        integer("length_km", 50, 7000), integer("source_elevation", 100, 5000),
    )),
)  # fmt: skip
