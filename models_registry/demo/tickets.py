"""Synthetic, labelled customer-support tickets for the three demo tenants.

Owns the demo tenants' identities (``DEMO_TENANTS``), their verticals' intents, the ticket templates
and slot values, and the generators that turn them into classification rows (``text``, ``label``)
or paraphrase groups (``text``, ``label``, ``group``) for the embedding kind, plus the CSV and JSON
Lines encodings the dataset upload path accepts. Used by the ``seed_demo`` management command and
by the training benchmarks.

Everything is pure Python (the standard library, and the dataset parser's ``fold_text``) driven by
``random.Random`` with an explicit seed, so the same arguments always give byte-identical output.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from models_registry.dataset_files import fold_text

DEMO_TENANTS: dict[str, dict[str, str]] = {
    "zoomride": {"name": "ZoomRide", "vertical": "ride-sharing"},
    "threadline": {"name": "Threadline Apparel", "vertical": "apparel-retail"},
    "northbank": {"name": "North Bank", "vertical": "banking"},
}
VERTICALS: tuple[str, ...] = ("ride-sharing", "apparel-retail", "banking")

MAX_ROWS = 20_000
"""The most rows one call makes; past it, near-duplicate tickets would dominate."""
MAX_TEXT_CHARS = 1000

_MAX_ATTEMPTS = 60  # fresh slot values tried per row before giving up on uniqueness
_PLACEHOLDER = re.compile(r"(\{[a-z0-9_]+\})")
_WORD = re.compile(r"[A-Za-z]{4,}")
_GREETED = re.compile(r"(?:hi|hello|hey)\b", re.IGNORECASE)
_KEEP_CAPITAL = re.compile(r"(?:I\b|\{|[A-Z]{2}|North Bank|ZoomRide)")

Slots = dict[str, str]


@dataclass(frozen=True)
class _Intent:
    key: str  # the slot every template mentions: what makes one concrete request distinct
    templates: tuple[str, ...]


@dataclass(frozen=True)
class _Vertical:
    name: str
    brand: str
    sample: Callable[[random.Random], Slots]
    intents: dict[str, _Intent]


# --------------------------------------------------------------------------- shared slot values

_FIRST_NAMES = (
    "Maria", "James", "Priya", "Wei", "Fatima", "Carlos", "Emily", "Ahmed", "Olivia", "Daniel",
    "Aisha", "Kenji", "Sofia", "Liam", "Chloe", "Mateo", "Grace", "Noah", "Hannah", "Omar", "Zoe",
    "Lucas", "Ava", "Ethan", "Nadia", "Tom", "Rachel", "Diego", "Mei", "Samuel", "Leila", "Jordan",
    "Alex", "Taylor", "Sam", "Jamie", "Chris", "Morgan", "Riley", "Dev", "Beatriz", "Yusuf",
)  # fmt: skip
_LAST_NAMES = (
    "Garcia", "Smith", "Patel", "Chen", "Khan", "Johnson", "Nguyen", "Williams", "Okafor", "Brown",
    "Kim", "Rossi", "Müller", "Silva", "Cohen", "Murphy", "Tanaka", "Lopez", "Novak", "Singh",
    "Walker", "Ali", "Dubois", "Hernández", "O'Brien", "Kowalski", "Mensah", "Larsen",
)  # fmt: skip
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
_MONTHS_SHORT = ("Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "proton.me")
_CITIES = (
    ("Portland", "OR"), ("Austin", "TX"), ("Denver", "CO"), ("Chicago", "IL"), ("Brooklyn", "NY"),
    ("Seattle", "WA"), ("Atlanta", "GA"), ("Boston", "MA"), ("San Diego", "CA"),
    ("Columbus", "OH"), ("Nashville", "TN"), ("Minneapolis", "MN"), ("Phoenix", "AZ"),
)  # fmt: skip
_STREETS = (
    "Elm", "Oak", "Maple", "Cedar", "Pine", "Lakeview", "Sunset", "Highland", "Mill", "River",
    "Willow", "Park", "Washington", "Franklin", "Chestnut", "Harbor",
)  # fmt: skip
_STREET_TYPES = ("St", "Street", "Ave", "Avenue", "Rd", "Blvd", "Lane", "Dr", "Court")


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _date(rng: random.Random) -> str:
    """A date as people type it: 'March 3', 'Oct 12th', '3/14', 'the 9th'."""
    month, day = rng.randrange(12), rng.randint(1, 28)
    form = rng.random()
    if form < 0.35:
        return f"{_MONTHS[month]} {day}"
    if form < 0.55:
        return f"{rng.choice(_MONTHS_SHORT)} {_ordinal(day)}"
    if form < 0.8:
        return f"{month + 1}/{day}"
    return f"the {_ordinal(day)}"


def _clock(rng: random.Random) -> str:
    hour, minute = rng.randint(1, 12), rng.choice((0, 0, 5, 10, 15, 20, 30, 40, 45, 50))
    suffix = rng.choice(("pm", "am", " pm", " am", "PM", ""))
    return f"{hour}{suffix}" if minute == 0 and suffix else f"{hour}:{minute:02d}{suffix}"


def _when(rng: random.Random) -> str:
    """A specific past moment: 'on Friday around 11:40pm', 'last night', 'on 3/14'."""
    if rng.random() < 0.3:
        return rng.choice(
            ("last night", "this morning", "last weekend", "on Saturday night", "on Friday night")
        )
    day = rng.choice(
        (
            "yesterday",
            "earlier today",
            "two days ago",
            f"on {rng.choice(_WEEKDAYS)}",
            f"on {_date(rng)}",
            f"on {_date(rng)}",
        )
    )
    if rng.random() < 0.6:
        day += f" {rng.choice(('around', 'at', 'at about'))} {_clock(rng)}"
    return day


def _money(rng: random.Random, low: float, high: float, *, whole: float = 0.25) -> str:
    value = rng.uniform(low, high)
    if rng.random() < whole:
        return f"${round(value):,}"
    return f"${value:,.2f}"


def _round_money(rng: random.Random, low: int, high: int, step: int) -> str:
    return f"${rng.randrange(low, high + 1, step):,}"


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())


def _email(rng: random.Random, first: str, last: str) -> str:
    first_a, last_a = _ascii(first), _ascii(last)
    local = rng.choice(
        (
            f"{first_a}.{last_a}",
            f"{first_a}{last_a}{rng.randint(1, 99)}",
            f"{first_a[0]}{last_a}",
            f"{first_a}_{rng.randint(1970, 2005)}",
            f"{last_a}.{first_a}{rng.randint(1, 9)}",
        )
    )
    return f"{local}@{rng.choice(_EMAIL_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    area, mid, end = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice(
        (f"({area}) {mid}-{end:04d}", f"{area}-{mid}-{end:04d}", f"+1 {area} {mid} {end:04d}")
    )


def _address(rng: random.Random) -> str:
    city, state = rng.choice(_CITIES)
    street = f"{rng.randint(2, 9899)} {rng.choice(_STREETS)} {rng.choice(_STREET_TYPES)}"
    if rng.random() < 0.4:
        street += f", {rng.choice(('Apt', 'Unit', 'Apt.', '#'))} {rng.randint(1, 40)}"
        street += rng.choice(("", "", "A", "B", "C"))
    return f"{street}, {city}, {state} {rng.randint(10000, 99999)}"


def _base_slots(rng: random.Random, brand: str) -> Slots:
    first, last = _person(rng)
    return {
        "brand": brand,
        "first": first,
        "name": f"{first} {last}",
        "date": _date(rng),
        "when": _when(rng),
        "email": _email(rng, first, last),
        "phone": _phone(rng),
        "address": _address(rng),
        "city": rng.choice(_CITIES)[0],
        "minutes": str(rng.randint(3, 25)),
        "days": str(rng.randint(3, 14)),
        "years": str(rng.randint(2, 25)),
        "pct": f"{rng.choice((10, 15, 20, 25, 30, 40, 50))}%",
    }


# --------------------------------------------------------------------------- ride-sharing

_RIDE_ITEMS = (
    "phone", "iPhone", "wallet", "keys", "house keys", "car keys", "backpack", "laptop bag",
    "laptop", "AirPods", "AirPods case", "sunglasses", "prescription glasses", "umbrella", "jacket",
    "gym bag", "headphones", "Kindle", "passport", "work badge", "water bottle", "scarf", "camera",
    "stroller", "shopping bag", "phone charger", "iPad", "watch", "hoodie", "suitcase", "guitar",
    "tote bag", "retainer", "hearing aid", "kid's car seat", "leather gloves",
)  # fmt: skip
_RIDE_ITEM_COLORS = ("black", "blue", "red", "grey", "brown", "white", "green", "pink")
_RIDE_PLACES = (
    "the airport", "JFK", "downtown", "Union Station", "the convention center", "Main St",
    "the mall", "my office", "the hospital", "Central Park", "the stadium", "campus",
    "the train station", "Terminal 2", "the Marlow Hotel", "my apartment", "the concert venue",
    "Pier 39", "the zoo", "the courthouse",
)  # fmt: skip
_CAR_COLORS = ("silver", "black", "white", "grey", "blue", "red", "dark green")
_CAR_MODELS = (
    "Toyota Camry", "Honda Civic", "Prius", "Hyundai Elantra", "Tesla Model 3", "Nissan Altima",
    "Kia Sportage", "Ford Escape", "Honda Odyssey", "Chevy Malibu",
)  # fmt: skip
_CARD_BRANDS = ("Visa", "Mastercard", "Amex", "Discover", "debit card", "Visa debit")
_WALLETS = ("PayPal", "Apple Pay", "Google Pay", "Venmo", "a gift card", "my business account")
_RIDE_TYPES = (
    "ride", "trip", "XL ride", "Comfort ride", "shared ride", "airport ride", "Green ride",
    "Black car ride",
)  # fmt: skip
_RIDE_CODE_WORDS = ("RIDE", "ZOOM", "SAVE", "WELCOME", "AIRPORT", "SPRING", "FALL", "NEWRIDER")


def _ride_slots(rng: random.Random) -> Slots:
    slots = _base_slots(rng, "ZoomRide")
    item = rng.choice(_RIDE_ITEMS)
    if rng.random() < 0.25:
        item = f"{rng.choice(_RIDE_ITEM_COLORS)} {item}"
    place, dest = rng.sample(_RIDE_PLACES, 2)
    quoted = rng.uniform(9, 60)
    fee = rng.randrange(12, 61) / 4  # cancellation and no-show fees come in quarters: $3 to $15
    charged = quoted * rng.uniform(1.3, 2.6)
    last4 = f"{rng.randint(0, 9999):04d}"
    brand = rng.choice(_CARD_BRANDS)
    code = rng.choice(_RIDE_CODE_WORDS) + rng.choice(("", "", "ZR"))
    code += slots["pct"].rstrip("%") if rng.random() < 0.75 else str(rng.randint(100, 999))
    slots.update(
        item=item,
        place=place,
        dest=dest,
        driver=rng.choice(_FIRST_NAMES)
        if rng.random() < 0.5
        else f"{rng.choice(_FIRST_NAMES)} {rng.choice('ABCDEFGHJKLMNPRSTVW')}.",
        car=f"{rng.choice(_CAR_COLORS)} {rng.choice(_CAR_MODELS)}",
        quoted=f"${quoted:.2f}",
        amount=f"${charged:.2f}",
        fee=f"${fee:.2f}" if rng.random() < 0.6 else f"${fee:g}",
        time=rng.choice(("late-night", "early morning", "morning", "evening", _clock(rng))),
        card=rng.choice(
            (f"{brand} ending in {last4}", f"{brand} ending {last4}", f"{brand} ****{last4}")
        ),
        wallet=rng.choice(_WALLETS),
        code=code,
        mph=str(rng.randint(75, 105)),
        ride_type=rng.choice(_RIDE_TYPES),
    )
    return slots


_RIDE_INTENTS = {
    "lost_item": _Intent(
        "item",
        (
            "I left my {item} in the car after my ride {when}.",
            "Lost my {item} in a ZoomRide {when}, can you help me get it back?",
            "left my {item} in the back seat",
            "Hi, I think I left my {item} in {driver}'s car. The trip was from {place} to {dest} "
            "{when}. How do I contact the driver?",
            "How do I get my {item} back? I forgot it in the car on my ride to {dest}.",
            "My {item} is still in the driver's vehicle. Can someone please contact {driver} so I "
            "can pick it up?",
            "Forgot my {item} in the trunk after the trip to {dest}. It's really important.",
            "Is there a lost and found? I dropped my {item} somewhere in the car during my {time} "
            "ride.",
            "Please help, I left my {item} behind in the {car}. Need it back asap.",
            "Lost property report: {item}, left in the vehicle on the trip to {dest} {when}.",
            "i left my {item} in my ride and the driver isn't answering my calls",
            "Can you arrange for my {item} to be returned? I'm pretty sure it fell out of my "
            "pocket in the car {when}.",
            "My kid left their {item} in the car on our ride {when}. Is there a way to reach the "
            "driver?",
        ),
    ),
    "driver_complaint": _Intent(
        "driver",
        (
            "My driver {driver} was extremely rude to me during the whole trip.",
            "I want to report {driver}'s behaviour. They were yelling on the phone the entire "
            "ride and ignored me when I said hello.",
            "Driver {driver} refused to turn on the AC and got an attitude when I asked.",
            "The car was filthy and smelled like smoke. Driver was {driver}, ride {when}.",
            "{driver} kept playing loud music and wouldn't turn it down even after I asked twice.",
            "Complaint about driver {driver}: unprofessional, on their phone the whole time, and "
            "complained about the size of my bags.",
            "not happy with {driver}, very rude and made comments about my tip",
            "The driver, {driver}, was eating in the car and didn't help with my luggage at all.",
            "I'd like to file a complaint. {driver} showed up in a different car than the app "
            "said and was dismissive when I asked about it.",
            "Can you please look into {driver}? Worst attitude I have ever seen from a driver.",
            "{driver} made rude remarks about my accent the entire ride. Very uncomfortable "
            "service.",
            "Rude driver {driver} {when}, please make sure I am never matched with them again.",
            "Your driver {driver} was very unprofessional today — arguing with me about the "
            "pickup spot and slamming the door.",
        ),
    ),
    "fare_dispute": _Intent(
        "amount",
        (
            "I was charged {amount} but the app quoted me {quoted} for the same {ride_type}.",
            "Why is my {ride_type} fare {amount}? The estimate was {quoted}.",
            "{ride_type} fare was way higher than the estimate, {amount} instead of {quoted}",
            "The driver took a much longer route than necessary and my fare went up to {amount}. "
            "Please adjust it or refund the difference.",
            "I got charged {amount} in surge pricing for a {minutes} minute ride from {place}. "
            "That can't be right.",
            "Please review the fare on my trip {when}. {amount} for {place} to {dest} is way more "
            "than I normally pay.",
            "My receipt shows {amount} including a toll fee, but we never went on a toll road on "
            "the way to {dest}.",
            "Overcharged on my {ride_type}! Quoted {quoted}, charged {amount}. I want the "
            "difference back.",
            "The trip to {dest} should have cost around {quoted} but I was billed {amount}. Can "
            "you recalculate the fare?",
            "Disputing the fare for my ride {when}: the driver forgot to end the trip and the "
            "meter kept running to {amount}.",
            "How is a {minutes} minute {ride_type} {amount}?? Never paid more than {quoted} for "
            "this route.",
            "The price changed after I booked. Upfront price was {quoted} and the final charge "
            'was {amount}. Why does my receipt say "route adjustment"?',
            "My ride from {place} to {dest} {when} cost {amount}. The app estimate said {quoted}, "
            "please fix the fare.",
            "Charged {amount} for a short trip to {dest}? That's double what it usually costs.",
            "The driver circled around {place} for ages and the fare ended up at {amount}.",
        ),
    ),
    "refund_request": _Intent(
        "fee",
        (
            "I was charged a {fee} cancellation fee even though the driver never showed up. "
            "Please refund it.",
            "Please refund the {fee} no-show fee, I was waiting at the pickup spot the whole time.",
            "refund for cancelled ride {fee}",
            "The driver cancelled on me but I still got charged {fee}. I would like a refund.",
            "Can I get my {fee} back? I cancelled within two minutes of booking and was still "
            "charged.",
            "I need a refund of {fee}. The ride was cancelled {when} and I never got in the car.",
            "Charged {fee} for a ride that never happened. Requesting a full refund to my card.",
            "Hello, my trip {when} was cancelled by the driver after I waited 15 minutes, and I "
            "was billed a {fee} fee. Refund please.",
            "Why did I pay a {fee} cancellation fee when the app kept reassigning drivers? I want "
            "that money refunded.",
            "Requesting a refund of the {fee} wait-time fee. The driver went to the wrong pickup "
            "location, not my fault.",
            "Please reverse the {fee} cancellation charge, I cancelled because the driver was 20 "
            "minutes away.",
            "I booked by accident and cancelled right away, but you still took {fee}. Can you "
            "refund it?",
            "My driver never arrived at {place} but I was charged a {fee} no-show fee. Please "
            "refund it.",
            "I want my {fee} back. The app cancelled my ride to {dest} on its own and still "
            "charged me a cancellation fee.",
            "Can you refund the {fee}? {driver} cancelled after I'd already been waiting outside.",
        ),
    ),
    "account_access": _Intent(
        "email",
        (
            "I can't log in to my account. The email is {email}.",
            "The verification code never arrives when I try to sign in with {email}.",
            "locked out of my account {email} please help",
            "I reset my password three times and it still says my password is wrong. My account "
            "email is {email}.",
            "I got a new phone and now I can't get into my ZoomRide account ({email}). The app "
            "keeps sending the login code to my old number.",
            "My account {email} was signed out and now it says the account doesn't exist. Please "
            "help me get back in.",
            'Can\'t sign in. App says "too many attempts". Account email: {email}',
            "Someone changed the password on my account and I can't access it anymore. "
            "Registered email is {email}.",
            "Hi, the password reset link sent to {email} has expired every time I click it. How "
            "do I get access?",
            "Please help me recover my account, I no longer have access to {email} but I still "
            "have the same phone number.",
            "The app keeps logging me out and won't let me back in with {email}.",
            "I'm unable to access my rider account linked to {email}, it shows an error when I "
            "enter my login details.",
        ),
    ),
    "payment_method": _Intent(
        "card",
        (
            "How do I remove my {card} from the app and add a new card?",
            "My {card} keeps getting declined in the app even though it works everywhere else.",
            "I want to change my default payment method from my {card} to {wallet}.",
            "Can't add my {card}, it says card not supported.",
            "Please update my payment info, the {card} expired and the new one won't save.",
            "Rides keep going on my {card} instead of my work card. How do I switch which card "
            "is the default?",
            "Is it possible to pay with {wallet} instead of my {card}?",
            "My payment method ({card}) was removed from my account without my permission and now "
            "I can't request rides.",
            "i need to delete the {card} from my profile, I closed that bank account",
            "Why does it say my {card} needs verification? I added it {when}.",
            "Can I split payment between {wallet} and my {card}?",
            "Setting up a new payment method isn't working. I enter the details for my {card} and "
            "it just spins forever.",
        ),
    ),
    "safety_incident": _Intent(
        "when",
        (
            "My driver was speeding and running red lights on my trip {when}. I felt unsafe the "
            "entire ride.",
            "I want to report a safety issue. The driver {driver} seemed drunk during my ride "
            "{when}.",
            "We were in an accident during my ride {when}. I'm okay but my neck hurts and I need "
            "to report it.",
            "The driver made inappropriate comments and touched my leg {when}. I want this "
            "reported.",
            "driver was texting while driving on the highway {when}, scary",
            "Urgent: my driver threatened me and wouldn't let me out of the car {when}.",
            "Safety report: the driver {when} kept falling asleep at the wheel. Please make sure "
            "they are not driving anyone else.",
            "I felt very unsafe {when}. The driver followed me to my building after dropping me "
            "off.",
            "The car had no working seatbelts and the driver was swerving between lanes {when}.",
            "I need to report an assault by my driver {when}. I have already called the police.",
            "Someone else was driving the car, not the person in the app photo. This happened "
            "{when} and it really scared me.",
            "The driver was aggressive, screamed at another car and then drove {mph} mph with me "
            "in the back {when}.",
        ),
    ),
    "promo_code": _Intent(
        "code",
        (
            "My promo code {code} isn't working.",
            "The code {code} says it's expired but the email said it's valid until {date}.",
            "Tried to apply {code} for {pct} off my ride and it didn't take the discount.",
            "promo {code} not applied to my ride",
            "I entered {code} before booking but the discount wasn't applied to my fare. Can you "
            "apply it now?",
            "My friend referred me with code {code} and neither of us got the ride credit.",
            "Why does {code} say 'not eligible for this ride'? It's supposed to work for airport "
            "trips.",
            "Where do I enter a promo code? I have {code} from your newsletter.",
            "I got {code} as an apology credit last week but it's not showing in my wallet.",
            "Is {code} still valid? It keeps giving me an error when I add it.",
            "The {pct} off code {code} only applied once, but it says it's good for 3 rides.",
            "Please honor promo code {code}, I was charged full price even though I applied it. "
            "Can you refund the discount amount?",
        ),
    ),
}


# --------------------------------------------------------------------------- apparel retail

_PRODUCTS = (
    "denim jacket", "linen shirt", "wool sweater", "cashmere cardigan", "maxi dress", "wrap dress",
    "rain jacket", "puffer coat", "graphic tee", "hoodie", "silk blouse", "pleated skirt",
    "bomber jacket", "flannel shirt", "trench coat", "polo shirt", "quarter-zip pullover",
    "midi skirt", "oxford shirt", "fleece vest", "jumpsuit", "blazer", "tank top", "parka",
    "shirt dress", "chore coat", "henley", "wool coat",
)  # fmt: skip
_PAIRED_PRODUCTS = (
    "slim-fit jeans", "straight-leg jeans", "chinos", "leather boots", "running shoes",
    "canvas sneakers", "yoga leggings", "cargo pants", "ankle boots", "swim shorts",
)  # fmt: skip
_PRODUCT_LINES = ("Harbor", "Essential", "Alpine", "Coastline", "Weekend", "Heritage", "Studio")
_APPAREL_COLORS = (
    "black", "navy", "olive", "cream", "burgundy", "heather grey", "sage green", "rust", "white",
    "camel", "dusty pink", "charcoal", "cobalt blue", "mustard",
)  # fmt: skip
_SIZES = ("XS", "S", "M", "L", "XL", "XXL", "small", "medium", "large", "6", "8", "10", "12")
_CARRIERS = ("UPS", "FedEx", "USPS", "DHL", "OnTrac")
_APPAREL_CODE_WORDS = ("WELCOME", "SUMMER", "THREAD", "VIP", "BDAY", "FALL", "FRIENDS", "FLASH")


def _apparel_slots(rng: random.Random) -> Slots:
    slots = _base_slots(rng, "Threadline")
    paired = rng.random() < 0.25
    product = rng.choice(_PAIRED_PRODUCTS if paired else _PRODUCTS)
    if rng.random() < 0.3:
        product = f"{rng.choice(_PRODUCT_LINES)} {product}"
    if paired:  # "the pair of chinos I received is torn", not "the chinos ... is torn"
        product = f"pair of {product}"
    size, new_size = rng.sample(_SIZES, 2)
    number = rng.randint(100000, 999999)
    order = rng.choice((f"#TL-{number}", f"TL{number}", f"#{number}", f"TL-{number}"))
    code = rng.choice(_APPAREL_CODE_WORDS) + slots["pct"].rstrip("%")
    if rng.random() < 0.3:
        code = code.lower() if rng.random() < 0.5 else f"TL-{code}"
    slots.update(
        product=product,
        color=rng.choice(_APPAREL_COLORS),
        size=size,
        new_size=new_size,
        order=order,
        amount=_money(rng, 18, 240),
        code=code,
        carrier=rng.choice(_CARRIERS),
    )
    return slots


_APPAREL_INTENTS = {
    "order_status": _Intent(
        "order",
        (
            "Where is my order {order}?",
            "Order {order} was placed {days} days ago and still hasn't shipped. What's going on?",
            "My tracking for {order} hasn't updated since {date}. Has the package been lost?",
            "Any update on order {order}? I need the {product} for an event this weekend.",
            "{carrier} tracking says delivered but I never received order {order}.",
            "hi, checking on the status of order {order}, thanks",
            "When will order {order} arrive? The estimated delivery date already passed.",
            "It's been over a week and order {order} still says 'processing'. Can you tell me when "
            "it will ship?",
            "Can you send me the tracking number for {order}? I never got a shipping confirmation "
            "email.",
            "order {order} still not here",
            "I ordered a {color} {product} (order {order}) on {date}. Is it on its way?",
            "Is my order {order} stuck somewhere? {carrier} shows no movement for {days} days.",
        ),
    ),
    "return_request": _Intent(
        "product",
        (
            "I'd like to return the {product} I bought, I changed my mind.",
            "How do I return the {color} {product}? It doesn't look like the photos.",
            "return {product} for a refund",
            "Can I get a return label for the {product} from order {order}? I want my money back.",
            "The {product} isn't what I expected, the material feels cheap. I'd like to send it "
            "back for a full refund.",
            "I bought the {product} as a gift and they already have one. Can I return it for "
            "store credit?",
            "What is your return policy? I want to send back the {product} I received {when}.",
            "Please start a return for the {product}, the color is completely different in person.",
            "i want to return my {product}, never worn, tags still on",
            "Returning the {product} from my last order. Do I need to pay for return shipping?",
            "I ordered two of the {product} by mistake and would like to return one and get "
            "refunded {amount}.",
            "Hi, I'm not happy with the {product} and want to return it. How long does the refund "
            "take to reach my card?",
        ),
    ),
    "exchange_size": _Intent(
        "product",
        (
            "Can I exchange the {product} for a size {new_size}? The {size} is too small.",
            "The {product} runs big, I need to swap the {size} for a {new_size}.",
            "exchange {product} size {size} for {new_size} please",
            "I'd like to exchange my {color} {product} for a different size. I ordered {size} but "
            "need {new_size}.",
            "How do I do a size exchange? The {product} fits weird, I need one size up.",
            "Ordered the {product} in {size} and it's too tight. Can you send a {new_size} instead "
            "and I'll send this one back?",
            "Is it possible to swap the {product} for a different size without paying shipping "
            "again?",
            "The {product} I got is a {size}, which doesn't fit. I want the same item in "
            "{new_size}, not a refund.",
            "need the {product} in a {new_size} instead of {size}",
            "Hi! Love the {product} but it's a bit loose. Could I exchange it for a {new_size}?",
            "I'd like to exchange the {product} I have for the {new_size}, if you still have that "
            "size.",
            "My {product} ({size}) is too long in the sleeves. Please exchange it for a size "
            "{new_size}.",
        ),
    ),
    "damaged_item": _Intent(
        "product",
        (
            "My {product} arrived with a hole in it.",
            "The {product} I received is torn at the seam. I want a replacement.",
            "damaged {product}, big stain on the front",
            "Order {order} came today and the {product} has a broken zipper.",
            "The {color} {product} arrived with a big stain on it and the packaging was ripped. "
            "Can you send a new one or refund me?",
            "The {product} fell apart after one wash, the stitching came undone.",
            "Received a defective {product}, one of the buttons is missing and the fabric is "
            "already pilling.",
            "My {product} showed up damaged — there's a tear near the pocket. Photos attached.",
            "The box was crushed and the {product} inside is ripped. Really disappointing.",
            "the {product} came with a snag and loose threads all over, looks used",
            "I just opened my package and the {product} has marks on it and a broken clasp. "
            "Please advise.",
            "The {product} I bought {when} is already coming apart at the seams, clearly a "
            "manufacturing defect.",
        ),
    ),
    "discount_code": _Intent(
        "code",
        (
            "My discount code {code} isn't working at checkout.",
            "The code {code} says invalid but I got it in your email {when}.",
            "Tried {code} for {pct} off and checkout won't accept it.",
            "discount code {code} not applying",
            "I forgot to use my code {code} on order {order}. Can you apply the {pct} discount "
            "now?",
            "Why doesn't {code} work on sale items? The email didn't say anything about "
            "exclusions.",
            "Is the {code} code still active? It says expired.",
            "Your welcome code {code} gave me {pct} off only one item instead of the whole order.",
            "Can you send me a new discount code? {code} stopped working halfway through checkout.",
            "The birthday coupon {code} I received doesn't apply to my cart. Can you help?",
            "Checkout keeps rejecting {code}. I've tried on the app and the website.",
            'The promo {code} from your Instagram post says "not valid for this account".',
        ),
    ),
    "cancel_order": _Intent(
        "order",
        (
            "Please cancel my order {order}.",
            "I need to cancel order {order}, I ordered the wrong {product}.",
            "cancel order {order} asap",
            "Can I still cancel order {order}? I just placed it {minutes} minutes ago.",
            "I changed my mind about the {product}, please cancel order {order} before it ships.",
            "Accidentally placed order {order} twice. Please cancel the duplicate.",
            "Cancel order {order} please, I found it cheaper elsewhere.",
            "How do I cancel an order? The cancel button isn't showing for {order}.",
            "Hi, I'd like to cancel my whole order ({order}) and get the refund back on my card.",
            "Order {order} is taking too long to ship, I want to cancel it.",
            "Please stop order {order} from shipping, I don't need it anymore.",
            "i want to cancel {order} it hasnt shipped yet",
        ),
    ),
    "shipping_address_change": _Intent(
        "address",
        (
            "I need to change the shipping address on order {order} to {address}.",
            "Wrong address on my order! Please ship it to {address} instead.",
            "update delivery address to {address}",
            "I just moved. Can you update the address for my order to {address}?",
            "Can the {product} be delivered to {address} instead of my home address?",
            "I typed the wrong apartment number. The correct address is {address}.",
            "Please redirect order {order} to {address}, I won't be home next week.",
            "Is it too late to change where my order ships? New address: {address}",
            "my order is going to my old address, please change it to {address}",
            "Could you update the delivery address for {order}? It should go to {address}, my "
            "office.",
            "The zip code on my order is wrong. Please correct the shipping address to {address}.",
            "Can I change the shipping address after placing the order? I need it sent to "
            "{address}.",
        ),
    ),
    "product_availability": _Intent(
        "product",
        (
            "Will the {product} be back in stock in size {size}?",
            "Is the {color} {product} available in {size}?",
            "when is the {product} restocking",
            "I've been waiting for the {product} to come back in {size} for weeks. Any restock "
            "date?",
            "Do you have the {product} in {color}? I only see it in black on the website.",
            "Is the {product} sold out everywhere or can I find it in a store near {city}?",
            "Can you notify me when the {product} is available again?",
            "Are you going to make the {product} again? It's been out of stock since {date}.",
            "Any chance the {color} {product} is still available in a {size}? Website says out of "
            "stock.",
            "Can I pre-order the {product}? It shows unavailable in my size.",
            "is the {product} available in petite or tall sizes",
            "Does the {city} store have the {product} in stock? I'd like to try it on before "
            "buying.",
        ),
    ),
}


# --------------------------------------------------------------------------- banking

_MERCHANTS = (
    "Amazon", "Uber Eats", "Spotify", "Walmart", "Target", "Shell", "Netflix", "APPLE.COM/BILL",
    "PAYPAL *EBAY", "SQ *BLUE BOTTLE", "Best Buy", "DoorDash", "Airbnb", "Expedia", "Costco",
    "TST* Luigi's Pizzeria", "Starbucks", "Steam Games", "Home Depot", "Café Rouge",
    "Planet Fitness", "Hulu", "Lyft", "CVS Pharmacy", "AMZN Mktp US",
)  # fmt: skip
_PAYEES = ("the electric company", "Comcast", "the water utility", "my credit card", "Verizon")
_TRANSFERS = (
    "wire transfer", "ACH transfer", "instant transfer", "Zelle payment", "international wire",
    "bank transfer", "online transfer",
)  # fmt: skip
_LOANS = (
    "mortgage", "personal loan", "car loan", "home equity loan", "small business loan",
    "debt consolidation loan", "student loan", "boat loan",
)  # fmt: skip
_LOAN_PURPOSES = (
    "a used car", "home renovations", "consolidating credit card debt", "a wedding",
    "buying my first home", "my business", "a new roof", "medical bills",
)  # fmt: skip
_CHANNELS = (
    "online banking", "the mobile app", "my online account", "the North Bank app",
    "internet banking", "the banking app",
)  # fmt: skip
_FEES = (
    "monthly maintenance fee", "ATM fee", "wire transfer fee", "late payment fee",
    "foreign transaction fee", "paper statement fee", "returned item fee", "account service charge",
    "out-of-network ATM fee", "minimum balance fee",
)  # fmt: skip
_LOST_PLACES = (
    "a restaurant", "the gym", "the grocery store", "the airport", "a gas station", "work",
    "a bar downtown", "the movie theater",
)  # fmt: skip
_TRAVEL_CITIES = ("Lisbon", "Mexico City", "Toronto", "London", "Chicago", "Miami", "Tokyo")


def _bank_slots(rng: random.Random) -> Slots:
    slots = _base_slots(rng, "North Bank")
    first, last = _person(rng)
    field, value = rng.choice(
        (
            ("mailing address", slots["address"]),
            ("home address", slots["address"]),
            ("phone number", slots["phone"]),
            ("mobile number", slots["phone"]),
            ("email address", slots["email"]),
            ("email", slots["email"]),
        )
    )
    slots.update(
        last4=f"{rng.randint(0, 9999):04d}",
        merchant=rng.choice(_MERCHANTS),
        amount=_money(rng, 8, 900),
        transfer_amount=_money(rng, 40, 6000, whole=0.5),
        recipient=rng.choice(("my landlord", "my sister", "my brother", f"{first} {last}")),
        payee=rng.choice(_PAYEES),
        transfer=rng.choice(_TRANSFERS),
        loan=rng.choice(_LOANS),
        loan_amount=_round_money(rng, 5000, 400000, 2500),
        score=str(rng.randint(560, 800)),
        purpose=rng.choice(_LOAN_PURPOSES),
        channel=rng.choice(_CHANNELS),
        fee=rng.choice(_FEES),
        fee_amount=_money(rng, 2.5, 35, whole=0.3),
        field=field,
        value=value,
        limit=_round_money(rng, 100, 2500, 50),
        place=rng.choice(_LOST_PLACES),
        card_kind=rng.choice(
            ("debit card", "credit card", "Visa debit card", "business debit card")
        ),
        travel_city=rng.choice(_TRAVEL_CITIES),
    )
    return slots


_BANK_INTENTS = {
    "card_lost_stolen": _Intent(
        "last4",
        (
            "I lost my {card_kind} ending in {last4}. Please block it.",
            "My wallet was stolen with my credit card ending {last4}. I need to freeze it "
            "immediately.",
            "lost card ending {last4}, need a replacement",
            "Please cancel my card ending in {last4}, I think I left it at {place}.",
            "My card ({last4}) was stolen {when}. How do I get a new one sent to me?",
            "Can't find my {card_kind} ending {last4} anywhere. Can you freeze it while I keep "
            "looking?",
            "Someone stole my purse {when} and my North Bank card ending {last4} was in it. Please "
            "deactivate the card.",
            "I need an emergency replacement card, mine (ending {last4}) was lost while traveling "
            "in {travel_city}.",
            "card ending in {last4} is missing, please put a hold on it",
            "Report lost card: ending {last4}. I'd like a replacement mailed to the address on "
            "file.",
            "I dropped my card ending {last4} somewhere {when}. Do I need to cancel it or can I "
            "just lock it in the app?",
            "My credit card {last4} was pickpocketed on the train. Please block it and send a "
            "replacement.",
            "I think my {card_kind} ending {last4} was stolen at {place}. Please block it right "
            "away.",
            "Lost my North Bank {card_kind} (ending {last4}) in {travel_city}. Can you send a "
            "replacement to my hotel?",
        ),
    ),
    "dispute_transaction": _Intent(
        "merchant",
        (
            "There's a charge from {merchant} for {amount} that I didn't make.",
            "I want to dispute a {amount} transaction at {merchant} on {date}.",
            "unknown charge from {merchant} for {amount}",
            "I was charged twice by {merchant} for the same purchase of {amount}. Please dispute "
            "the duplicate.",
            "{merchant} never delivered what I paid for and won't respond. I want to dispute the "
            "{amount} charge.",
            "I don't recognize a transaction from {merchant} on my statement. How do I file a "
            "dispute?",
            "Please open a chargeback for {amount} at {merchant}, I cancelled that subscription "
            "months ago.",
            "There's a pending charge of {amount} from {merchant} that isn't mine. Can you "
            "investigate?",
            "i returned an item to {merchant} but they never refunded the {amount}, want to "
            "dispute it",
            "Fraudulent transaction on my account: {merchant}, {amount}, {date}. I still have my "
            "card, so someone must have the number.",
            "How long does a dispute take? I reported the {merchant} charge of {amount} last week "
            "and haven't heard anything.",
            "{merchant} charged me {amount} instead of the price we agreed on. Can the bank "
            "dispute it?",
        ),
    ),
    "transfer_failed": _Intent(
        "transfer_amount",
        (
            "My transfer of {transfer_amount} to {recipient} failed.",
            "I sent {transfer_amount} to {recipient} by {transfer} on {date} and it never arrived.",
            "transfer failed, {transfer_amount} gone from my account",
            "The {transfer} for {transfer_amount} shows 'failed' but the money was taken from my "
            "checking account.",
            "Why was my {transfer} of {transfer_amount} rejected? The account details are correct.",
            "I tried to move {transfer_amount} from checking to savings and got an error, but the "
            "balance changed.",
            "{recipient} says they never got the {transfer_amount} I sent {when}. Where is my "
            "money?",
            "My bill payment of {transfer_amount} to {payee} was returned. Why did the transfer "
            "fail?",
            "My {transfer} to {recipient} has been pending for 3 days. It was {transfer_amount}. "
            "Can you check what happened?",
            'the app says "transfer unsuccessful" every time I try to send {transfer_amount}',
            "Outgoing {transfer} of {transfer_amount} bounced back. Please let me know what went "
            "wrong and when the funds will return.",
            "I need help, my rent payment of {transfer_amount} didn't go through and my landlord "
            "is asking for it.",
        ),
    ),
    "loan_inquiry": _Intent(
        "loan",
        (
            "What are your current rates for a {loan}?",
            "I'm interested in applying for a {loan} of around {loan_amount}.",
            "what are {loan} rates right now",
            "Can you tell me what I need to qualify for a {loan}? I've been a customer for {years} "
            "years.",
            "How long does approval take for a {loan}? I'm hoping to borrow {loan_amount}.",
            "I'd like to know if I'm pre-approved for a {loan} and what the monthly payment would "
            "be.",
            "What's the maximum term on a {loan}, and is there a penalty for paying it off early?",
            "Hello, I applied for a {loan} {when} and haven't heard back. What's the status of my "
            "application?",
            "can I get a {loan} with a credit score around {score}",
            "I'd like to refinance my existing {loan} with North Bank. Could someone call me "
            "about options?",
            "Is there a discount on {loan} interest rates for existing checking customers?",
            "Thinking about a {loan} for {purpose}. What documents would I need to apply?",
        ),
    ),
    "account_locked": _Intent(
        "channel",
        (
            "I'm locked out of {channel} after too many wrong password attempts.",
            "My account is locked and I can't get into {channel}. Please unlock it.",
            "{channel} is locked, please help",
            "It says my account has been locked for security reasons when I log in to {channel}. "
            "What do I do?",
            "I entered the wrong PIN too many times and now {channel} won't let me in.",
            "Please unlock my access to {channel}. I've verified my identity at the branch "
            "already.",
            "Why is my account frozen? I can't sign in to {channel} and I need to pay bills today.",
            "Got a message that my access to {channel} is suspended. I haven't done anything "
            "unusual.",
            "Can't log in to {channel}, it says \"account locked, call customer service\". I've "
            "been on hold for an hour.",
            "how do i unlock {channel}? forgot my password and now it's locked",
            "My login for {channel} is blocked after I tried to reset my password. Can you reset "
            "it for me?",
            "I was traveling and now {channel} is locked. The security questions don't work "
            "either.",
        ),
    ),
    "fee_refund": _Intent(
        "fee",
        (
            "Can you refund the {fee_amount} {fee} on my account?",
            "I was charged a {fee} of {fee_amount} and I don't think it's fair. Please reverse it.",
            "refund the {fee} please",
            "Why did I get a {fee}? I kept the minimum balance all month. I'd like it refunded.",
            "I've been a customer for {years} years, could you waive the {fee} this time?",
            "Please reverse the {fee_amount} {fee} from {date}, it was your system's error.",
            "I was told the {fee} would be waived for my account type, but I was still charged "
            "{fee_amount}.",
            "Is it possible to get the {fee} refunded? It was my first time.",
            "Charged {fee_amount} for a {fee} again this month. I want that money back.",
            "I noticed a {fee} of {fee_amount} on my statement. Can you credit it back to my "
            "checking account?",
            "the {fee} is ridiculous, {fee_amount} just for that, please refund",
            "Requesting a courtesy refund of the {fee} charged {when}.",
        ),
    ),
    "update_contact_details": _Intent(
        "value",
        (
            "Please update my {field} to {value}.",
            "I need to change the {field} on my account. The new one is {value}.",
            "new {field} is {value}",
            "How do I update my {field}? It should be {value} now.",
            "Can you change my {field} on file to {value}? The old one is no longer in use.",
            "My {field} has changed, please replace it with {value} so I don't miss any "
            "statements.",
            "Update contact details: {field} should be {value}.",
            "i got a new {field}, its {value}, can you update it",
            "Hello, I'd like to update my personal details. My {field} is now {value}.",
            "The bank still has my old {field}. Please change it to {value}.",
            "I tried to edit my {field} in the app but it won't save. The new one is {value}.",
            "Please make sure all my accounts use {value} as my {field} from now on.",
        ),
    ),
    "overdraft_question": _Intent(
        "limit",
        (
            "Can I increase my overdraft limit to {limit}?",
            "Why is my account overdrawn by {limit}? I thought I had enough money.",
            "what is my overdraft limit, is it still {limit}",
            "How does overdraft protection work? If I go {limit} over, what happens?",
            "I'd like to set up overdraft protection linked to my savings account, up to {limit}.",
            "My balance went negative by {limit}. How long do I have to bring it back before "
            "there are consequences?",
            "Does North Bank offer an arranged overdraft of {limit} on student accounts?",
            "Can you explain why a payment went through when I had no money? Now I'm {limit} "
            "overdrawn.",
            "Please turn off overdraft on my account, I don't want to spend more than I have. "
            "Right now it allows {limit}.",
            "i went {limit} into my overdraft, will it affect my credit score",
            "What interest do you charge on an overdraft of {limit}?",
            "Is there a way to get an emergency overdraft of {limit} until payday on {date}?",
            "A bill from {payee} pushed me {limit} into my overdraft. Is there a grace period?",
            "What's the difference between overdraft protection and an overdraft line of credit? "
            "I'd need about {limit}.",
        ),
    ),
}


_SPECS: dict[str, _Vertical] = {
    "ride-sharing": _Vertical("ride-sharing", "ZoomRide", _ride_slots, _RIDE_INTENTS),
    "apparel-retail": _Vertical("apparel-retail", "Threadline", _apparel_slots, _APPAREL_INTENTS),
    "banking": _Vertical("banking", "North Bank", _bank_slots, _BANK_INTENTS),
}


# --------------------------------------------------------------------------- out of scope

OUT_OF_SCOPE_LABEL = "out_of_scope"
"""The label of messages that fit none of a vertical's intents (the intent classifier's default)."""

# Companies a customer of each vertical mixes it up with, and what they wanted from them.
_NEIGHBOURS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ride-sharing": (
        ("Delta", "United Airlines", "Amtrak", "Hertz", "DoorDash", "Uber Eats", "Greyhound"),
        ("flight", "train ticket", "rental car", "food delivery", "bus ticket", "hotel booking"),
    ),
    "apparel-retail": (
        ("Amazon", "Best Buy", "IKEA", "Target", "Walmart", "Sephora", "Apple"),
        ("laptop", "sofa", "TV", "blender", "headphones", "skincare set", "phone case"),
    ),
    "banking": (
        ("Chase", "Wells Fargo", "the IRS", "Geico", "Coinbase", "Venmo", "my landlord"),
        ("tax refund", "car insurance claim", "crypto wallet", "mortgage with them", "rent portal"),
    ),
}
_URLS = ("bit.ly/3xPrize", "win-now.example.com", "tinyurl.com/freegift", "cheap-deals.example.net")
_PRIZES = ("$1,000 gift card", "free iPhone 15", "$500 Walmart voucher", "luxury cruise", "Tesla")
_TEAMS = ("the Lakers", "the Yankees", "the Chiefs", "Arsenal", "the Celtics", "the Packers")
_DISHES = ("lasagna", "banana bread", "chicken curry", "pancakes", "guacamole", "pad thai")
_SHOWS = ("The Office", "Stranger Things", "The Bear", "Succession", "Friends", "Severance")
_COUNTRIES = ("Australia", "Canada", "Portugal", "Japan", "Brazil", "Kenya", "Norway")
_SUBJECTS = ("algebra", "chemistry", "World War II", "photosynthesis", "Shakespeare", "calculus")

# Two disjoint pools of the same four kinds of message (spam, another company's customer,
# chit-chat, off-topic): tenants' datasets draw from the first, the held-out test set from the
# second, so a head is measured on wordings it never trained on.
_OUT_OF_SCOPE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "train": (
        # spam
        "Congratulations! You have been selected to receive a {prize}. Claim it at {url}",
        "Boost your website traffic by 300%. Our SEO experts are ready, reply for a free audit.",
        "Make $5,000 a week working from home!!! Visit {url} now",
        "Hot singles in {city} want to meet you",
        "We buy houses for cash, any condition. Call us today for an offer.",
        "URGENT: your package delivery fee is unpaid, pay {amount} at {url} to release it",
        "Buy 10,000 Instagram followers for only {amount}. Limited offer!",
        "Dear friend, I am a prince and need your help moving {amount} out of the country.",
        # another company's customer
        "My {other_thing} from {other} never showed up, can you check on it?",
        "Is this {other}? I need to talk to someone about my {other_thing}.",
        "How do I cancel my {other} subscription?",
        "I was told to contact you about my {other_thing} with {other}.",
        "Can you reset my {other} password? I'm locked out.",
        "What are {other}'s customer service hours?",
        "I need help with my {other_thing}. The {other} app keeps crashing.",
        # chit-chat
        "hi",
        "hello?? anyone there",
        "How are you doing today?",
        "Are you a real person or a bot?",
        "Tell me a joke",
        "thanks, that's all. have a great day!",
        "lol ok",
        "Good morning! Hope your {weekday} is going well.",
        "What's your name?",
        # off-topic
        "What's the weather going to be like in {city} this weekend?",
        "Who won the {team} game last night?",
        "Can you give me a recipe for {dish}?",
        "What is the capital of {country}?",
        "Can you help me with my {subject} homework?",
        "Is {show} worth watching?",
        "How many ounces are in a cup?",
        "Recommend a good book for a long flight",
    ),
    "held_out": (
        # spam
        "You are our lucky winner today!!! Tap {url} to collect your {prize}",
        "Lowest mortgage rates guaranteed, apply in 2 minutes at {url}",
        "Cheap designer watches, 90% off, worldwide shipping.",
        "Your computer has a virus. Call our technicians immediately to fix it.",
        "Earn passive income with crypto trading bots. DM me for details.",
        "Final notice: your car's extended warranty is about to expire.",
        # another company's customer
        "Hey {other}, my {other_thing} is wrong again. Please fix it.",
        "Where can I find my {other} order number?",
        "I think I got charged twice by {other} for my {other_thing}.",
        "Does {other} have a store in {city}?",
        "Please transfer me to {other} support.",
        "My {other} account got hacked, what do I do?",
        # chit-chat
        "hey there",
        "Is anybody reading these messages?",
        "You guys are awesome, just wanted to say that",
        "What's up",
        "ok bye",
        "Do you like your job?",
        "Happy holidays to the whole team!",
        # off-topic
        "Will it rain in {city} tomorrow?",
        "What time does the {team} game start?",
        "How long should I bake {dish} for?",
        "Translate 'good morning' into Japanese please",
        "What's the population of {country}?",
        "Explain {subject} to me like I'm five.",
        "Who plays the lead in {show}?",
        "What's a good name for a golden retriever puppy?",
    ),
}
_OUT_OF_SCOPE_POOLS = tuple(_OUT_OF_SCOPE_TEMPLATES)


def _out_of_scope_slots(spec: _Vertical, rng: random.Random) -> Slots:
    companies, things = _NEIGHBOURS[spec.name]
    return {
        **spec.sample(rng),
        "other": rng.choice(companies),
        "other_thing": rng.choice(things),
        "url": rng.choice(_URLS),
        "prize": rng.choice(_PRIZES),
        "team": rng.choice(_TEAMS),
        "dish": rng.choice(_DISHES),
        "show": rng.choice(_SHOWS),
        "country": rng.choice(_COUNTRIES),
        "subject": rng.choice(_SUBJECTS),
        "weekday": rng.choice(_WEEKDAYS),
        "amount": _money(rng, 20, 900, whole=0.6),
    }


# --------------------------------------------------------------------------- wrappers and noise

_GREETINGS = (
    "Hi,", "Hello,", "Hey,", "Hi there,", "Hello team,", "Hi {brand},", "Dear {brand} support,",
    "Good morning,", "Good afternoon,", "hey", "Hiya,", "Hi {brand} team,",
    "To whom it may concern,",
)  # fmt: skip
_POLITE = (
    "Thanks!", "Thank you.", "Thanks in advance.", "Appreciate your help.",
    "Any help would be appreciated.", "Thanks so much for your help.", "Please let me know.",
    "Looking forward to hearing from you.", "Thank you for your time.", "thx",
)  # fmt: skip
_FRUSTRATED_OPENERS = (
    "This is the second time I'm writing about this.", "Really frustrated right now.",
    "Not happy.", "Seriously?", "I've been waiting for days.", "Ugh.",
)  # fmt: skip
_FRUSTRATED_CLOSERS = (
    "This is unacceptable.", "Please fix this ASAP!!", "Very disappointed.",
    "I expect a response today.", "Getting really annoyed.",
    "Third time contacting you about this.", "Terrible experience so far.", "Please sort this out.",
)  # fmt: skip
_SIGN_OFFS = (
    "Thanks, {first}", "Regards, {name}", "Best, {first}", "- {first}", "Cheers, {first}",
    "Sent from my iPhone", "{name}", "Kind regards,\n{name}", "Thanks,\n{first}",
)  # fmt: skip
_EXPANSIONS = (
    ("I'd ", "I would "), ("can't", "cannot"), ("don't", "do not"), ("I'm ", "I am "),
    ("It's ", "It is "), ("isn't", "is not"), ("won't", "will not"), ("doesn't", "does not"),
)  # fmt: skip


def _typo(word: str, rng: random.Random) -> str:
    """One keyboard slip inside a word: swapped, dropped or doubled letter."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind < 0.75:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def _sentence_count(template: str) -> int:
    return max(1, len(re.findall(r"[.!?]+(?:\s|$)", template)))


def _pattern(template: str, rng: random.Random) -> str:
    """Wrap a template in an optional greeting, mood sentence and sign-off."""
    body = template
    room = _sentence_count(template) < 3
    mood = rng.random()
    if room and mood < 0.06:
        body = f"{rng.choice(_FRUSTRATED_OPENERS)} {body}"
    elif room and mood < 0.14:
        body = f"{_terminate(body)} {rng.choice(_FRUSTRATED_CLOSERS)}"
    elif room and mood < 0.34:
        body = f"{_terminate(body)} {rng.choice(_POLITE)}"
    text = body
    if rng.random() < 0.3 and not _GREETED.match(template):
        if rng.random() < 0.25:
            text = f"{rng.choice(_GREETINGS)}\n{body}"
        else:
            if rng.random() < 0.6 and not _KEEP_CAPITAL.match(body):
                body = body[:1].lower() + body[1:]
            text = f"{rng.choice(_GREETINGS)} {body}"
    if rng.random() < 0.15:
        text += ("\n" if rng.random() < 0.6 else " ") + rng.choice(_SIGN_OFFS)
    return text


def _terminate(text: str) -> str:
    return text if text[-1:] in ".!?" else text + "."


def _noisy_literals(pattern: str, rng: random.Random) -> list[str]:
    """Split on placeholders and roughen only the literal text, so slot values stay verbatim."""
    segments = _PLACEHOLDER.split(pattern)
    literal = range(0, len(segments), 2)
    if rng.random() < 0.2:
        old, new = rng.choice(_EXPANSIONS)
        for i in literal:
            segments[i] = segments[i].replace(old, new)
    if rng.random() < 0.1:
        for i in literal:
            segments[i] = re.sub(r"[.,!?;:]+(?=\s|$)", "", segments[i])
    if rng.random() < 0.15:
        spots = [(i, m.start(), m.end()) for i in literal for m in _WORD.finditer(segments[i])]
        chosen = rng.sample(spots, min(len(spots), rng.choice((1, 1, 2))))
        for i, start, end in sorted(chosen, reverse=True):  # later spans first: offsets hold
            segment = segments[i]
            segments[i] = segment[:start] + _typo(segment[start:end], rng) + segment[end:]
    return segments


def _render(template: str, slots: Slots, rng: random.Random) -> str:
    """One ticket: the template, wrapped and roughened, with every placeholder filled from slots."""
    segments = _noisy_literals(_pattern(template, rng), rng)
    for i in range(1, len(segments), 2):
        segments[i] = slots[segments[i][1:-1]]
    text = "".join(segments)
    if rng.random() < 0.1:
        text = text.lower()
    text = re.sub(r"[ \t]+", " ", text).strip()
    return text[:1].upper() + text[1:] if rng.random() < 0.5 and text[:1].islower() else text


def _render_ticket(spec: _Vertical, label: str, rng: random.Random) -> str:
    """A fresh ticket for one intent with newly drawn slot values."""
    return _render(rng.choice(spec.intents[label].templates), spec.sample(rng), rng)


# --------------------------------------------------------------------------- public API


def _resolve(vertical_or_slug: str) -> _Vertical:
    if vertical_or_slug in _SPECS:
        return _SPECS[vertical_or_slug]
    if vertical_or_slug in DEMO_TENANTS:
        return _SPECS[DEMO_TENANTS[vertical_or_slug]["vertical"]]
    choices = ", ".join([*VERTICALS, *DEMO_TENANTS])
    raise ValueError(
        f"unknown vertical or demo tenant {vertical_or_slug!r}; choose one of {choices}."
    )


def _balanced_labels(labels: list[str], count: int, rng: random.Random) -> list[str]:
    """``count`` labels, each used ``count // len(labels)`` times plus at most one more."""
    base, extra = divmod(count, len(labels))
    chosen = [label for label in labels for _ in range(base)] + rng.sample(labels, extra)
    rng.shuffle(chosen)
    return chosen


def _check_count(name: str, count: int) -> None:
    if count < 0:
        raise ValueError(f"{name} must be zero or more, not {count}.")
    if count > MAX_ROWS:
        raise ValueError(
            f"{name}={count} is more than can be generated uniquely; at most {MAX_ROWS} rows."
        )


def labels_for(vertical_or_slug: str) -> list[str]:
    """The intent labels of a vertical (or of a demo tenant's vertical), in a stable order."""
    return list(_resolve(vertical_or_slug).intents)


def generate_tickets(
    vertical_or_slug: str, *, rows: int, seed: int = 0, out_of_scope_rows: int = 0
) -> list[dict[str, str]]:
    """Balanced, unique ``{"text", "label"}`` tickets for a vertical, deterministic per seed,
    plus ``out_of_scope_rows`` messages labelled ``out_of_scope`` (from the training pool of
    ``generate_out_of_scope``) mixed in at random places.

    Unique as the platform compares texts (``fold_text``: case and whitespace folded), so no
    ticket is dropped on upload as a repeat of another. Without out-of-scope rows the output is
    what it always was for the same arguments.
    """
    spec = _resolve(vertical_or_slug)
    _check_count("rows", rows)
    _check_count("out_of_scope_rows", out_of_scope_rows)
    rng = random.Random(f"tickets:{spec.name}:{seed}")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for label in _balanced_labels(list(spec.intents), rows, rng):
        text = _unique(partial(_render_ticket, spec, label, rng), seen, spec=spec, made=len(out))
        out.append({"text": text, "label": label})
    if out_of_scope_rows:
        # Its own random stream, so the in-scope tickets stay those of the same seed without.
        extra = random.Random(f"out-of-scope:{spec.name}:{seed}")
        for _ in range(out_of_scope_rows):
            text = _unique(
                lambda: _render_out_of_scope(spec, "train", extra), seen, spec=spec, made=len(out)
            )
            out.insert(extra.randint(0, len(out)), {"text": text, "label": OUT_OF_SCOPE_LABEL})
    return out


def sample_ticket(
    vertical_or_slug: str, label: str, rng: random.Random
) -> tuple[str, dict[str, str]]:
    """One fresh ticket for ``label`` and the slot values it was written with (who wrote it,
    what about), so a reply can speak of the same things."""
    spec = _resolve(vertical_or_slug)
    slots = spec.sample(rng)
    return _render(rng.choice(spec.intents[label].templates), slots, rng), slots


def generate_out_of_scope(
    vertical_or_slug: str, *, rows: int, seed: int = 0, held_out: bool = False
) -> list[dict[str, str]]:
    """Unique support messages that fit none of the vertical's intents, labelled
    ``out_of_scope``: spam, questions meant for another company, chit-chat and off-topic
    requests. ``held_out`` draws from a second pool of templates that tenants' datasets
    (``generate_tickets(out_of_scope_rows=)``) never use, for measuring on unseen wordings."""
    spec = _resolve(vertical_or_slug)
    _check_count("rows", rows)
    pool = _OUT_OF_SCOPE_POOLS[1 if held_out else 0]
    rng = random.Random(f"out-of-scope:{pool}:{spec.name}:{seed}")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for _ in range(rows):
        text = _unique(
            lambda: _render_out_of_scope(spec, pool, rng), seen, spec=spec, made=len(out)
        )
        out.append({"text": text, "label": OUT_OF_SCOPE_LABEL})
    return out


def _render_out_of_scope(spec: _Vertical, pool: str, rng: random.Random) -> str:
    template = rng.choice(_OUT_OF_SCOPE_TEMPLATES[pool])
    return _render(template, _out_of_scope_slots(spec, rng), rng)


def _unique(make: Callable[[], str], seen: set[str], *, spec: _Vertical, made: int) -> str:
    """A text from ``make`` not yet in ``seen`` (as folded), added to it; ValueError when
    ``_MAX_ATTEMPTS`` tries find none."""
    for _ in range(_MAX_ATTEMPTS):
        text = make()
        if text and len(text) <= MAX_TEXT_CHARS and fold_text(text) not in seen:
            seen.add(fold_text(text))
            return text
    raise ValueError(
        f"More rows were asked for than can be generated uniquely for {spec.name}: "
        f"only {made} unique rows were made."
    )


def _pair_groups(
    spec: _Vertical, *, groups: int, per_group: int, seed: int
) -> list[tuple[str, Slots, list[str]]]:
    """``(label, slots, texts)`` per group: one concrete request written ``per_group`` ways."""
    fewest = min(len(intent.templates) for intent in spec.intents.values())
    if not 2 <= per_group <= fewest:
        raise ValueError(f"per_group must be between 2 and {fewest}, not {per_group}.")
    _check_count("groups", groups)
    _check_count("groups * per_group", groups * per_group)
    rng = random.Random(f"pairs:{spec.name}:{seed}")
    seen: set[str] = set()
    out: list[tuple[str, Slots, list[str]]] = []
    for label in _balanced_labels(list(spec.intents), groups, rng):
        templates = spec.intents[label].templates
        for _ in range(_MAX_ATTEMPTS):
            slots = spec.sample(rng)  # one customer, one concrete request ...
            texts = [_render(t, slots, rng) for t in rng.sample(templates, per_group)]  # ... n ways
            folded = {fold_text(text) for text in texts}
            if (
                len(folded) == per_group
                and seen.isdisjoint(folded)
                and all(text and len(text) <= MAX_TEXT_CHARS for text in texts)
            ):
                break
        else:
            raise ValueError(
                f"groups={groups} is more than can be generated uniquely for {spec.name}: "
                f"only {len(out)} groups of unique paraphrases were made."
            )
        seen.update(folded)
        out.append((label, slots, texts))
    return out


def generate_pairs(
    vertical_or_slug: str, *, groups: int, per_group: int = 2, seed: int = 0
) -> list[dict[str, str]]:
    """Paraphrase groups (``text``, ``label``, ``group``) for training an embedding model."""
    made = _pair_groups(_resolve(vertical_or_slug), groups=groups, per_group=per_group, seed=seed)
    return [
        {"text": text, "label": label, "group": f"g{number:04d}"}
        for number, (label, _, texts) in enumerate(made, 1)
        for text in texts
    ]


def _columns(rows: list[dict]) -> list[str]:
    if rows and all("reply" in row for row in rows):
        return ["text", "reply"]  # a reply dataset (``models_registry.demo.replies``)
    return ["text", "label", *(["group"] if any("group" in row for row in rows) else [])]


def to_csv(rows: list[dict]) -> bytes:
    """UTF-8 CSV with a ``text,label[,group]`` (or ``text,reply``) header, quoted by the csv
    module."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def to_jsonl(rows: list[dict]) -> bytes:
    """UTF-8 JSON Lines, one ``{"text", "label"[, "group"]}`` object per row."""
    columns = _columns(rows)
    lines = (
        json.dumps({key: row[key] for key in columns if key in row}, ensure_ascii=False) + "\n"
        for row in rows
    )
    return "".join(lines).encode("utf-8")
