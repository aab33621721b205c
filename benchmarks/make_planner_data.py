"""Writes benchmarks/data/planner_set.jsonl: texts with digits, labelled arithmetic or not.

The planner delegates arithmetic it finds in a request to `math`; this set measures how often it
is right (precision: phone numbers, dates, versions, ranges, codes and scores must not be sent)
and how much it finds (recall: questions as people type them). Each template is a different
phrasing, filled twice with seeded random numbers, so the file is the same on every run:

    python benchmarks/make_planner_data.py   # then commit the JSONL
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).parent / "data" / "planner_set.jsonl"
FILLS_PER_TEMPLATE = 2

# kind -> phrasings; {fields} are filled by FIELDS below
NOT_ARITHMETIC: dict[str, list[str]] = {
    "phone": [
        "Call me at {p3}-{p4} after lunch.",
        "My number is ({p3}) {p3}-{p4}, text first",
        "Reach the front desk on +1 {p3} {p3} {p4}.",
        "You can call {p3}-{p3}-{p4} any weekday",
        "Fax it to {p3}.{p3}.{p4} please",
        "Support line: 1-800-{p3}-{p4}",
        "What's the best time to call {p3}-{p4}?",
        "The office moved; the new line is +44 20 {p4} {p4}.",
        "Dial {p3}-{p4} ext. {n2} for billing.",
        "Is ({p3}) {p3}-{p4} still your cell?",
        "Emergency contact: {p3}-{p3}-{p4} (mom)",
    ],
    "date": [
        "The meeting is on {y}-{mm}-{dd}.",
        "Born 12/25/{y}, raised in Ohio",
        "Can we move the demo to {m}/{d}?",
        "Invoice due {mm}/{dd}/{y} - please confirm",
        "Deadline: {d}.{m}.{y}",
        "Let's do {m}/{d} or {m}/{d2}, whichever works",
        "Released {y}-{mm}-{dd}T10:00:00Z according to the changelog",
        "Schedule for the week of {m}/{d}-{m}/{d2}",
        "What happened on {m}/{d}/{y} at the plant?",
        "Our anniversary is {d}/{m}; any gift ideas?",
        "Logs from {y}-{mm}-{dd} show the crash",
        "The lease runs {mm}/{y} to {mm}/{y2}.",
    ],
    "time": [
        "I work 9-5 daily, so evenings are best",
        "The store is open 10-6 on Sundays",
        "Office hours are 9:30-11:15 on Tuesdays.",
        "Can we meet 10-11am tomorrow?",
        "The shift runs 7-3 with a lunch break",
        "Lunch is 12:30-1:30 in the atrium",
        "Train leaves at {h}:{min} and arrives {h2}:{min}",
        "Workshop 2-4pm in room B",
        "Quiet hours are 10pm-7am, please respect them",
        "I'm free {h}-{h2} on Friday if that helps",
        "Standup moved to {h}:{min}; retro stays at {h2}:{min}",
    ],
    "version": [
        "Upgrade to v{n}.{n2}.{n3} before Friday",
        "This needs Python 3.11 or newer",
        "Works on 2.0-rc1 but not on 2.1",
        "The bug appeared between {n}.{n2} and {n}.{n3}",
        "Pin requests==2.31.0 in the lockfile",
        "Node 18.17.1 breaks the build",
        "iOS 17.4.1 fixed the battery drain",
        "Running Ubuntu 22.04 with kernel 6.5.0-14",
        "Which is better, Django 4.2 or 5.0?",
        "The changelog for 1.{n2}.{n3} mentions a memory leak",
        "Firmware {n}.{n2}-beta{n3} bricked my router",
    ],
    "range": [
        "We expect 10-20 people at the party",
        "Read pages {n}-{n3} for tomorrow",
        "Kids aged 6-12 get in free",
        "It takes 3-5 business days to ship",
        "Temperatures will be {n2}-{n4} degrees today",
        "Sections 4-7 cover the proofs",
        "Budget is $200-300 for the gift",
        "Cook for 25-30 minutes until golden",
        "Rooms 101-110 are on the first floor",
        "Chapters {n}-{n3} are optional reading",
        "The event runs from {y}-{y2} in Berlin",
        "Between {n2} and {n4} guests RSVP'd",
        "Serves 4-6; double it for a crowd",
    ],
    "address": [
        "Ship it to 221B Baker Street, London",
        "I live at {n3} Main St, Apt 4/5",
        "The office is at 1600 Amphitheatre Pkwy, Mountain View, CA {zip}",
        "Meet me at 350 5th Ave, Suite 3-12",
        "Send mail to PO Box {p4}, Austin TX {zip}",
        "Unit 12-3, 45 Orchard Road, Singapore",
        "Our warehouse: {n3}-{n3} Industrial Way",
        "Flat 2/14 Smith Street, Sydney NSW 2000",
    ],
    "zip": [
        "What's the zip code {zip}-{p4} for?",
        "Deliveries to {zip} are delayed",
        "Is {zip} in San Francisco?",
        "Postcode SW1A 1AA, London",
        "The ZIP+4 is {zip}-{p4}",
    ],
    "code": [
        "SKU 123-456 is out of stock",
        "Order #{p4}-{p4} has shipped",
        "ISBN 978-3-16-148410-0 is the second edition",
        "Ticket JIRA-{p4} tracks the bug",
        "Part number {p3}-{p4}-A fits the older model",
        "My flight is UA {p4} to Denver",
        "Reference code: {p3}/{p4}/{y}",
        "Error 0x80070005 when installing",
        "The model number is RTX-{p4} Ti",
        "Tracking: 1Z 999 AA1 {p4} {p4}",
        "Use promo code SAVE-{n2}-{n2} at checkout",
        "Case number {y}-CV-{p4} was dismissed",
        "Seat 14-C, gate B{n2}",
        "Patch KB{p4}{n3} fails to install",
        "The SSN field wants the format 123-45-6789",
        "Model 1920x1080 monitors are cheaper now",
        "Route 66 and I-{n2} meet near here",
        "Card ending 4-4-2-1 was declined",
    ],
    "score": [
        "We won 3-1 last night!",
        "Final score 24-17, what a game",
        "They drew 2-2 after extra time",
        "The Lakers lost 98-104 in overtime",
        "Federer took the set 7-6",
        "It finished {n}-{n2} in the derby",
        "The vote passed 52-48 in the senate",
        "Our team is {n2}-{n} this season",
        "The score was {n} + 1 after extra time",
    ],
    "ratio": [
        "Mix the concrete 1:3 with water",
        "The screen is 16:9 and the photo 4:3",
        "Odds are 5/1 on the favourite",
        "A 3/4 majority is required",
        "Use a 1/2 cup of sugar",
        "Open 24/7 including holidays",
        "The film is shot at 2.39:1",
        "Add 1/4 tsp of salt and stir",
    ],
    "list": [
        "1. Buy milk 2. Call mom 3. Pay rent",
        "Steps 1-3 are done, 4 is next",
        "See items 2, 5 and 9 on the list",
        "Top 10 movies of {y}",
        "Question 3 (b) asks about enzymes",
        "Rule #1: never skip leg day",
        "Figure 2-3 shows the results",
        "Table 4.2 lists the sample sizes",
    ],
    "year": [
        "The war lasted from 1939-1945.",
        "In {y} we moved to Denver",
        "She was born in the '90s, around 1994",
        "The {y}-{y2} season was our best",
        "FY{y2} revenue grew compared with {y}",
        "Academic year {y}/{y2} starts in September",
    ],
    "money": [
        "The jacket costs $49.99 plus tax",
        "Rent went from $1,450 to $1,600",
        "I paid 20 EUR for 2 tickets",
        "Salary range: $80k-$95k",
        "Tickets are $15/person",
        "The stock closed at 182.34, down 1.2%",
    ],
    "measure": [
        "I'm 5'11\" and 180 lbs",
        "The room is 12 x 14 ft",
        "Use 2x4 lumber for the frame",
        "Tyre size 225/45R17",
        "A 3-4 kg bag of flour",
        "Bake at 180-200 C",
        "Speed limit is 65 mph on I-{n2}",
        "The table is {n2} x {n3} cm",
        "Blood pressure 120/80 is normal",
        "My 10k time is 52:30",
        "The 3x3 grid puzzle is tricky",
        "Resolution 3840x2160 at 60 Hz",
    ],
    "misc": [
        "Agent 007 is back in theaters",
        "Windows 10/11 both support it",
        "The 9/11 memorial is downtown",
        "Catch-22 is a great novel",
        "I gave it 5/5 stars",
        "COVID-19 cases are rising in {y}",
        "Channel {n2}-{n} shows the game",
        "The B-52 flew over the base",
        "He's in grade 6-A this year",
        "Tell me about the 24-hour rule",
        "What does HTTP 404 mean?",
        "What is the capital of France? I need it for quiz #{n2}",
        "Compute budget for Q{n}-{y}",
        "What's in aisle 5-B?",
        "How much does the 4-6 person tent weigh?",
        "Calculate the route from exit {n2} to exit {n3}",
        "Is 9-5 a good schedule for a new parent?",
        "The PIN is 4-digit, the code {p4}",
        "Solve puzzle 3-2 in the app",
        "What is the 3-2-1 backup rule?",
        "What is a 401-k?",
        "Compute nodes 1-8 are down",
        "What's the 50/30/20 budgeting rule?",
        "Meet at gate 22-B at 7",
        "Lot 4-17 was sold yesterday",
        "The 5-4 decision surprised everyone",
        "Call 911, then 555-0100",
        "Play the 1-2 combo again",
        "Our Q3 numbers are in slide 12-14",
        "Use the 4-7-8 breathing technique",
        "What year did 3-D movies become popular?",
        "He was sentenced to 5-10 years",
        "Size 10-12 shoes are sold out",
        "Please rate it 1-5, with 5 being best",
        "Grades K-12 attend the same campus",
        "Room {n}+2 layout, south facing",
    ],
}

ARITHMETIC: dict[str, list[str]] = {
    "symbols": [
        "What is {a}*{b}?",
        "{a}*{b}",
        "what's {a} + {b}",
        "Calculate {c} - {a}",
        "How much is {c} / {a}?",
        "compute ({a} + {b}) * {s}",
        "{c} / {s} = ?",
        "{a}+{b}+{s}",
        "What is {c}-{a}?",
        "Evaluate {a}^{s2}",
        "What's {a} * {b} - {s}?",
        "({a} - {s}) * ({b} + {s})",
        "{a}.{s} * {s2}.{b}",
        "What is -{a} * {s}?",
        "{c} - {a} = ?",
        "Solve {c}/{s}",
        "Quick: {c} / {s}",
        "what is {c}/{s}",
        "{a} ** {s2}",
        "What is 2**{s3}?",
    ],
    "words": [
        "What is {a} times {b}?",
        "{c} divided by {s}",
        "what's {a} plus {b}",
        "{c} minus {a}, please",
        "What is {a} multiplied by {b}?",
        "{s} to the power of {s2}",
        "What is {a} squared?",
        "{s} cubed",
        "what is {c} over {s}",
        "how much is {a} times {b} plus {s}",
        "What's the square root of {sq}?",
        "{s2} raised to the power of {s}",
        "Tell me {c} minus {b}",
        "{a} plus {b} plus {s} is what?",
    ],
    "unicode": [
        "What is {a} \u00d7 {b}?",
        "{c} \u00f7 {s}",
        "{a}\u00d7{b}",
        "what's {c} \u2212 {a}",
        "{c} \u00f7 {s} = ?",
    ],
    "x": [
        "what's {a} x {b}",
        "What is {a}x{b}?",
        "calculate {a} x {b} x {s}",
        "{a} x {b} = ?",
        "How much is {a} x {b}?",
    ],
    "percent": [
        "What is {p}% of {c}?",
        "{p}% of {c}",
        "what's {p} percent of {c}",
        "Calculate {p}% of {c} for the tip",
    ],
    "functions": [
        "sqrt({sq})",
        "What is sqrt({sq}) + {s}?",
        "factorial({s2})",
        "gcd({a}, {b})",
        "compute lcm({s}, {s2})",
        "what is sqrt({sq}) * sqrt({sq})",
    ],
    "prose": [
        "{a}*{b} then write a haiku about it",
        "I bought {s} boxes of {a} pens each, so {s}*{a} pens in total?",
        "If a car goes {a} km per hour for {s} hours, that's {a} * {s} km, right?",
        "My rent is {c} and we split it {s} ways: what is {c} / {s}?",
        "Before you answer the email, compute {a} + {b} for the invoice total.",
        "hey can you check {a}*{b} for me",
        "I need {a} * {b} for my homework, and explain the steps",
        "Quick sanity check: {c} - {a} = ?",
        "Recipe needs {s} cups times {s2} batches, so {s} * {s2}?",
        "The area is {a} * {b} square meters; is that enough for a studio?",
        "Please work out {c} / {s} and round it",
        "For the report, what is {c} - {b}? Thanks!",
        "Is {a}*{b} bigger than {c}?",
        "Tell me a joke, then tell me what {a} + {b} is",
        "Split the bill: {c} / {s} each?",
        "We had {c} visitors and {a} left; what's {c} - {a}?",
        "Explain recursion. Also, what's {s}^{s2}?",
        "In Python, what does {a}*{b} evaluate to?",
        "My budget is {c} plus {a} for travel, what is the total?",
        "what is ({a} + {b}) / {s} rounded to 2 decimals",
        "{a} * {b} - is that right? I got {c}",
        "Hi! {c}/{s}?",
        "How much is {a}.{s}*{s2} in dollars?",
        "Double-check this for me: {a} + {b} + {s} = {c}",
        "Give me {a}*{b} and a fun fact about the number",
        "So {a} times {b} makes how many?",
        "What do you get from {c} divided by {s}?",
        "Can you do {c} / {s}?",
        "what's {p}% of {c} as a tip",
        "Translate 'hello' to French and compute {a}*{s}",
        "ok so {a} + {b} + {s} + {s2}, what's the sum",
        "I think {a}*{b} is {c} but I'm not sure",
        "Convert: {a} * 60 seconds",
        "Math question - {c} / {s}",
        "{a} + {b}? quick",
        "Need the total of {a}+{b}+{s} asap",
        "{c} - {a} - {b} = ?",
        "lol what is {a}*{b} even",
        "Remind me what {s} times {s2} is",
        "How many is {s2} dozen, i.e. {s2} * 12?",
        "Whats {a} x {s}",
        "I owe {c} and paid {a}; how much is {c} - {a}?",
        "Can you compute {a}^2 + {b}^2 for the hypotenuse?",
        "Multiply {a} * {b} and show your work",
        "Is it true that {a} * {s} = {c}?",
        "Rewrite this sentence, and also what's {a} + {b}?",
        "Monthly cost is {a} * 12, correct?",
        "Average of {a}, {b} and {s}: ({a} + {b} + {s}) / 3",
        "{a} / 2 + {b} / 2",
        "The answer to {s} * ({a} - {b}) please",
        "My kid asked me what {s2} ^ {s} is and I forgot",
        "what is {p}% of {c} minus {a}",
        "Show me {a} * 1.08 to include tax",
        "Work out {a} * {b} / {s}",
        "Hey, {s}*{s2}*{s}?",
        "{c} divided by {a} rounded to the nearest whole number",
        "What's bigger, {a}*{b} or {c}?",
        "So basically I need {c} / {s} hours per week, right?",
        "Estimate: ({c} - {a}) / {s}",
        "Using only integers, calculate {c} // {s}",
    ],
}

FIELDS: dict[str, Callable[[random.Random], str]] = {
    "p3": lambda r: str(r.randint(200, 989)),
    "p4": lambda r: f"{r.randint(0, 9999):04d}",
    "n": lambda r: str(r.randint(1, 9)),
    "n2": lambda r: str(r.randint(10, 60)),
    "n3": lambda r: str(r.randint(11, 99)),
    "n4": lambda r: str(r.randint(61, 99)),
    "y": lambda r: str(r.randint(1950, 2026)),
    "y2": lambda r: str(r.randint(1950, 2026)),
    "m": lambda r: str(r.randint(1, 12)),
    "d": lambda r: str(r.randint(1, 28)),
    "d2": lambda r: str(r.randint(1, 28)),
    "mm": lambda r: f"{r.randint(1, 12):02d}",
    "dd": lambda r: f"{r.randint(1, 28):02d}",
    "h": lambda r: str(r.randint(6, 11)),
    "h2": lambda r: str(r.randint(1, 5)),
    "min": lambda r: r.choice(["00", "15", "30", "45"]),
    "zip": lambda r: str(r.randint(10000, 99999)),
    "a": lambda r: str(r.randint(12, 999)),
    "b": lambda r: str(r.randint(3, 99)),
    "c": lambda r: str(r.randint(1000, 99999)),
    "s": lambda r: str(r.randint(2, 9)),
    "s2": lambda r: str(r.randint(2, 6)),
    "s3": lambda r: str(r.randint(8, 64)),
    "p": lambda r: str(r.choice([5, 10, 12.5, 15, 18, 20, 25, 33, 40, 75])),
    "sq": lambda r: str(r.randint(2, 40) ** 2),
}


def fill(template: str, rng: random.Random) -> str:
    values = {name: make(rng) for name, make in FIELDS.items() if "{" + name + "}" in template}
    return template.format(**values)


def rows(seed: int = 7) -> list[dict[str, object]]:
    """Every template filled FILLS_PER_TEMPLATE times (texts deduplicated), in a fixed order."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    seen: set[str] = set()
    for label, groups in ((False, NOT_ARITHMETIC), (True, ARITHMETIC)):
        for kind, templates in groups.items():
            for template in templates:
                for _ in range(FILLS_PER_TEMPLATE):
                    text = fill(template, rng)
                    if text not in seen:
                        seen.add(text)
                        out.append({"text": text, "arithmetic": label, "kind": kind})
    return out


def main() -> None:
    data = rows()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in data))
    positives = sum(1 for row in data if row["arithmetic"])
    print(f"wrote {len(data)} rows ({positives} arithmetic) to {OUT}")


if __name__ == "__main__":
    main()
