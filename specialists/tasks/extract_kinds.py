"""The kinds of text the extraction task draws from: `TRAIN_KINDS` for training,
`HELD_OUT_KINDS` only for evaluation (other kinds of text, other keys, other layouts).

A kind makes a fresh set of values and renders them through one of its templates; a key its
template does not mention is absent from the text, so its answer is null. Values are copied into
the answer as the text writes them, except counts and amounts, which become JSON numbers
("$1,250.50" -> 1250.5, "3 guests" -> 3).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from specialists.tasks.common import FIRST_NAMES, LAST_NAMES

Value = tuple[str, str | int | float]  # (as the text writes it, as the answer has it)


@dataclass(frozen=True)
class Kind:
    name: str
    keys: tuple[str, ...]
    make: Callable[[random.Random], dict[str, Value]]
    templates: tuple[str, ...]


# -- value makers --------------------------------------------------------------------------------
def text(value: str) -> Value:
    return value, value


def money(rng: random.Random, low: int, high: int) -> Value:
    cents = rng.choice((0, 0, 50, 99, rng.randint(1, 99)))
    amount = rng.randint(low, high) + cents / 100
    number = int(amount) if cents == 0 else round(amount, 2)
    return f"${amount:,.2f}", number


def count(rng: random.Random, low: int, high: int) -> Value:
    n = rng.randint(low, high)
    return str(n), n


def name(rng: random.Random) -> Value:
    return text(f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")


def email_for(rng: random.Random, person: str, org: str) -> Value:
    first, last = person.lower().split()[:2]
    domain = "".join(ch for ch in org.lower() if ch.isalnum())[:14]
    user = rng.choice(
        (f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rng.randint(1, 99)}")
    )
    return text(f"{user}@{domain}.{rng.choice(('com', 'org', 'net', 'io'))}")


def phone(rng: random.Random) -> Value:
    a, b, c = rng.randint(200, 989), rng.randint(200, 989), rng.randint(1000, 9999)
    return text(rng.choice((f"{a}-{b}-{c}", f"({a}) {b}-{c}", f"+1 {a} {b} {c}", f"{a}.{b}.{c}")))


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")  # fmt: skip


def date(rng: random.Random) -> Value:
    month, day, year = rng.randint(1, 12), rng.randint(1, 28), rng.randint(2024, 2027)
    return text(rng.choice((
        f"{MONTHS[month - 1]} {day}", f"{day} {MONTHS[month - 1]} {year}",
        f"{year}-{month:02d}-{day:02d}", f"{MONTHS[month - 1][:3]} {day}, {year}",
    )))  # fmt: skip


def clock(rng: random.Random) -> Value:
    hour, minute = rng.randint(1, 12), rng.choice((0, 15, 30, 45))
    half = rng.choice(("AM", "PM", "am", "pm"))
    return text(rng.choice((f"{hour}:{minute:02d} {half}", f"{hour + 8:02d}:{minute:02d}")))


def code(rng: random.Random, pattern: str) -> Value:
    """`pattern`: A = capital letter, 9 = digit, anything else kept."""
    return text("".join(
        rng.choice(string.ascii_uppercase) if ch == "A" else str(rng.randint(0, 9)) if ch == "9"
        else ch for ch in pattern
    ))  # fmt: skip


def one_of(rng: random.Random, *choices: str) -> Value:
    return text(rng.choice(choices))


def company(rng: random.Random) -> Value:
    return text(
        f"{rng.choice(('Acme', 'Bluefin', 'Nova', 'Greenleaf', 'Summit', 'Pinecrest', 'Orbit'))} "
        f"{rng.choice(('Labs', 'Logistics', 'Foods', 'Systems', 'Studio', 'Partners'))}"
    )


CITIES = ("Lisbon", "Denver", "Nairobi", "Osaka", "Toronto", "Hamburg", "Austin", "Lima",
          "Auckland", "Glasgow", "Seoul", "Madrid")  # fmt: skip
STREETS = ("Elm Street", "Oak Avenue", "Harbor Road", "Maple Lane", "King Street", "Park Way")


def address(rng: random.Random) -> Value:
    return text(f"{rng.randint(2, 980)} {rng.choice(STREETS)}")


def _contact(rng: random.Random) -> dict[str, Value]:
    who, org = name(rng), company(rng)
    return {
        "name": who, "job_title": one_of(rng, "Sales Manager", "Senior Engineer",
                                          "Account Director", "Office Coordinator", "CTO"),
        "company": org, "email": email_for(rng, who[0], org[0]), "phone": phone(rng),
    }  # fmt: skip


def _order(rng: random.Random) -> dict[str, Value]:
    return {
        "order_id": code(rng, "A-99999"), "customer": name(rng),
        "item": one_of(rng, "Desk Lamp", "Coffee Grinder", "Yoga Mat", "Wall Clock",
                       "Water Bottle", "Phone Case", "Notebook Set"),
        "quantity": count(rng, 1, 40), "total": money(rng, 8, 900), "delivery_date": date(rng),
    }  # fmt: skip


def _event(rng: random.Random) -> dict[str, Value]:
    return {
        "event": one_of(rng, "Spring Book Fair", "Jazz Night", "Robotics Expo",
                        "Harvest Festival", "Startup Pitch Evening"),
        "date": date(rng), "time": clock(rng),
        "venue": one_of(rng, "Town Hall", "Riverside Park", "Grand Theater", "Hall B",
                        "Old Mill"),
        "city": text(rng.choice(CITIES)), "ticket_price": money(rng, 5, 120),
    }  # fmt: skip


def _job(rng: random.Random) -> dict[str, Value]:
    return {
        "position": one_of(rng, "Data Analyst", "Line Cook", "Nurse", "Backend Developer",
                           "Warehouse Supervisor", "Graphic Designer"),
        "company": company(rng), "location": text(rng.choice(CITIES)),
        "salary": _thousands(rng),
        "contact_email": email_for(rng, "jobs desk", rng.choice(("hireme", "careers", "talentco"))),
    }  # fmt: skip


def _thousands(rng: random.Random) -> Value:
    n = rng.randint(28, 160) * 1000
    return f"${n:,}", n


def _appointment(rng: random.Random) -> dict[str, Value]:
    return {
        "patient": name(rng), "doctor": text(f"Dr. {rng.choice(LAST_NAMES)}"),
        "date": date(rng), "time": clock(rng),
        "clinic": one_of(rng, "Lakeside Clinic", "City Dental", "Northgate Health Center",
                         "Sunrise Medical"),
        "phone": phone(rng),
    }  # fmt: skip


def _shipping(rng: random.Random) -> dict[str, Value]:
    weight = round(rng.randint(1, 250) / 10, 1)
    return {
        "tracking_number": code(rng, rng.choice(("1Z999A99999999", "AA999999999AA"))),
        "carrier": one_of(rng, "UPS", "FedEx", "DHL", "Royal Mail", "PostNord"),
        "recipient": name(rng), "weight_kg": (str(weight), weight), "delivery_date": date(rng),
    }  # fmt: skip


def _hotel(rng: random.Random) -> dict[str, Value]:
    return {
        "guest": name(rng),
        "hotel": one_of(rng, "Hotel Aurora", "The Seaside Inn", "Parkview Suites",
                        "Grand Meridian", "Alpine Lodge"),
        "check_in": date(rng), "check_out": date(rng), "guests": count(rng, 1, 6),
        "confirmation_code": code(rng, "AA9A99"),
    }  # fmt: skip


def _meeting(rng: random.Random) -> dict[str, Value]:
    return {
        "organizer": name(rng),
        "topic": one_of(rng, "Q3 budget review", "Website redesign", "Hiring plan",
                        "Customer feedback", "Release planning"),
        "date": date(rng), "time": clock(rng), "room": code(rng, "Room 9A9"),
        "attendees": count(rng, 2, 30),
    }  # fmt: skip


TRAIN_KINDS: tuple[Kind, ...] = (
    Kind("contact_signature", ("name", "job_title", "company", "email", "phone"), _contact, (
        "Best regards,\n{name}\n{job_title}, {company}\n{email} | {phone}",
        "Thanks again for your help!\n\n--\n{name}\n{job_title} at {company}\nEmail: {email}",
        "Cheers,\n{name} ({company})\nMobile: {phone}",
    )),
    Kind("order_note", ("order_id", "customer", "item", "quantity", "total", "delivery_date"),
         _order, (
        "Order {order_id} from {customer}: {quantity} x {item}, total {total}. "
        "Please deliver by {delivery_date}.",
        "Hi, this is {customer}. I'd like to order {quantity} units of {item}. "
        "My order number is {order_id}.",
        "New order!\nCustomer: {customer}\nItem: {item}\nQty: {quantity}\nAmount due: {total}\n"
        "Delivery: {delivery_date}",
    )),
    Kind("event_announcement", ("event", "date", "time", "venue", "city", "ticket_price"),
         _event, (
        "Join us for {event} on {date} at {time}! It takes place at {venue} in {city}. "
        "Tickets cost {ticket_price}.",
        "{event}\nWhen: {date}, {time}\nWhere: {venue}, {city}",
        "Save the date: {event} comes to {city} on {date}. Tickets are {ticket_price} each.",
    )),
    Kind("job_posting", ("position", "company", "location", "salary", "contact_email"), _job, (
        "{company} is hiring a {position} in {location}. Salary: {salary} per year. "
        "Apply at {contact_email}.",
        "We're looking for a {position} to join {company}. This role is based in {location}. "
        "Send your CV to {contact_email}.",
        "Job opening: {position}\nCompany: {company}\nPay: {salary}/year\nLocation: {location}",
    )),
    Kind("appointment_reminder", ("patient", "doctor", "date", "time", "clinic", "phone"),
         _appointment, (
        "Reminder: {patient}, you have an appointment with {doctor} on {date} at {time} at "
        "{clinic}. Call {phone} to reschedule.",
        "Hello {patient}, this confirms your visit to {clinic} on {date} at {time}.",
        "Appointment\nPatient: {patient}\nDoctor: {doctor}\nDate: {date}\nTime: {time}",
    )),
    Kind("shipping_notice",
         ("tracking_number", "carrier", "recipient", "weight_kg", "delivery_date"), _shipping, (
        "Your package for {recipient} has shipped with {carrier}. Tracking number: "
        "{tracking_number}. Weight: {weight_kg} kg. Expected delivery: {delivery_date}.",
        "{carrier} update: parcel {tracking_number} will arrive on {delivery_date}.",
        "Shipment details - recipient: {recipient}, carrier: {carrier}, tracking: "
        "{tracking_number}, weight {weight_kg} kg",
    )),
    Kind("hotel_booking",
         ("guest", "hotel", "check_in", "check_out", "guests", "confirmation_code"), _hotel, (
        "Dear {guest}, your stay at {hotel} is confirmed from {check_in} to {check_out} for "
        "{guests} guests. Confirmation code: {confirmation_code}.",
        "Booking {confirmation_code}: {hotel}, check-in {check_in}, check-out {check_out}.",
        "Hi {guest}! We look forward to welcoming your party of {guests} at {hotel} on "
        "{check_in}.",
    )),
    Kind("meeting_invite", ("organizer", "topic", "date", "time", "room", "attendees"),
         _meeting, (
        '{organizer} invited you to "{topic}" on {date} at {time} in {room}. '
        "{attendees} people are invited.",
        "Meeting: {topic}\nOrganizer: {organizer}\nWhen: {date} {time}\nRoom: {room}",
        "Quick sync about {topic} at {time} in {room}. - {organizer}",
    )),
)  # fmt: skip


def _flight(rng: random.Random) -> dict[str, Value]:
    origin, destination = rng.sample(CITIES, 2)
    return {
        "passenger": name(rng), "flight_number": code(rng, "AA 999"),
        "from_city": text(origin), "to_city": text(destination), "date": date(rng),
        "seat": code(rng, "99A"), "fare": money(rng, 40, 1400),
    }  # fmt: skip


def _apartment(rng: random.Random) -> dict[str, Value]:
    return {
        "address": address(rng), "monthly_rent": money(rng, 450, 3800),
        "bedrooms": count(rng, 1, 5), "landlord": name(rng), "phone": phone(rng),
        "available_from": date(rng),
    }  # fmt: skip


def _invoice(rng: random.Random) -> dict[str, Value]:
    return {
        "invoice_number": code(rng, "INV-9999-999"), "client": company(rng),
        "amount_due": money(rng, 60, 9000), "due_date": date(rng),
        "sender_email": email_for(rng, "billing team", company(rng)[0]),
    }  # fmt: skip


def _pet(rng: random.Random) -> dict[str, Value]:
    return {
        "pet_name": one_of(rng, "Biscuit", "Luna", "Pepper", "Milo", "Ziggy", "Hazel"),
        "species": one_of(rng, "dog", "cat", "rabbit", "parrot"),
        "color": one_of(rng, "brown", "black and white", "ginger", "grey", "golden"),
        "last_seen": one_of(rng, "Maple Park", "Central Station", "Elm Street",
                            "Oakwood Library"),
        "owner": name(rng), "phone": phone(rng), "reward": money(rng, 20, 500),
    }  # fmt: skip


def _rental(rng: random.Random) -> dict[str, Value]:
    return {
        "renter": name(rng),
        "car_model": one_of(rng, "Toyota Corolla", "VW Golf", "Ford Ranger", "Tesla Model 3"),
        "pickup_location": text(f"{rng.choice(CITIES)} {rng.choice(('Airport', 'Central'))}"),
        "pickup_date": date(rng), "days": count(rng, 1, 21), "daily_rate": money(rng, 19, 180),
    }  # fmt: skip


HELD_OUT_KINDS: tuple[Kind, ...] = (
    Kind("flight_booking",
         ("passenger", "flight_number", "from_city", "to_city", "date", "seat", "fare"),
         _flight, (
        "Booking confirmed for {passenger}: flight {flight_number} from {from_city} to "
        "{to_city} on {date}, seat {seat}. Total fare: {fare}.",
        "Hi {passenger}, your flight {flight_number} to {to_city} departs on {date}. "
        "Seat {seat}.",
        "E-TICKET\nPassenger: {passenger}\nFlight: {flight_number}\nRoute: {from_city} - "
        "{to_city}\nFare paid: {fare}",
    )),
    Kind("apartment_listing",
         ("address", "monthly_rent", "bedrooms", "landlord", "phone", "available_from"),
         _apartment, (
        "For rent: {bedrooms}-bedroom apartment at {address}. {monthly_rent} per month, "
        "available from {available_from}. Contact {landlord} at {phone}.",
        "Cozy flat at {address}, {bedrooms} bedrooms, rent {monthly_rent}/month. Call {phone}.",
        "Landlord {landlord} has a {bedrooms} bedroom place at {address} opening up on "
        "{available_from}.",
    )),
    Kind("invoice_email",
         ("invoice_number", "client", "amount_due", "due_date", "sender_email"), _invoice, (
        "Hello {client}, please find attached invoice {invoice_number} for {amount_due}, due on "
        "{due_date}. Questions? Write to {sender_email}.",
        "Invoice {invoice_number}\nBill to: {client}\nAmount: {amount_due}\nDue: {due_date}",
        "Friendly reminder that invoice {invoice_number} ({amount_due}) is still open. "
        "- {sender_email}",
    )),
    Kind("lost_pet_notice",
         ("pet_name", "species", "color", "last_seen", "owner", "phone", "reward"), _pet, (
        "LOST {species}! {pet_name} is {color} and was last seen near {last_seen}. Please call "
        "{owner} at {phone}. Reward: {reward}.",
        "Have you seen {pet_name}? Our {color} {species} went missing near {last_seen}. "
        "Call {phone}.",
        "Missing: {pet_name} ({species}, {color}). Owner: {owner}. {reward} reward for safe "
        "return.",
    )),
    Kind("car_rental",
         ("renter", "car_model", "pickup_location", "pickup_date", "days", "daily_rate"),
         _rental, (
        "Rental confirmed for {renter}: a {car_model} for {days} days from {pickup_date}, "
        "picked up at {pickup_location}. Rate: {daily_rate} per day.",
        "{renter}, your {car_model} is ready at {pickup_location} on {pickup_date}.",
        "RENTAL AGREEMENT - Driver: {renter} - Vehicle: {car_model} - Duration: {days} days - "
        "Daily rate: {daily_rate}",
    )),
)  # fmt: skip
