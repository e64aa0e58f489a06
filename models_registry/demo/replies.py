"""Synthetic agent replies for the demo tenants: rows of ``text`` (a ticket from
``models_registry.demo.tickets``, or the start of a reply) and ``reply`` (the agent's answer, or
the rest of it), for training ``reply-autocomplete`` models.

Each tenant answers in its own voice: ZoomRide is casual and signs with an agent's first name,
Threadline Apparel is warm, North Bank is formal. A reply speaks of what the ticket was about
(the same item, order, driver or amount: the ticket and the reply share their slot values), in
a greeting, one or two sentences for the ticket's intent, and a sign-off, on separate lines.

Pure and deterministic like the tickets: the same arguments give the same rows.
"""

from __future__ import annotations

import random
import re

from models_registry.dataset_files import fold_text
from models_registry.demo import tickets

# Share of rows whose text is the start of a reply and whose reply is the rest of it.
DEFAULT_PREFIX_SHARE = 0.15
_MAX_ATTEMPTS = 60
_PLACEHOLDER = re.compile(r"\{([a-z0-9_]+)\}")


# --------------------------------------------------------------------------- voices

_VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "ride-sharing": {
        "greetings": ("Hey {first}!", "Hi {first}!", "Hey {first}, thanks for reaching out!"),
        "closings": (
            "Have a great ride!", "Thanks for riding with ZoomRide!",
            "Let me know if there's anything else I can do.", "We're here 24/7 if you need us.",
        ),
        "signatures": ("Cheers,\n{agent} from ZoomRide", "Ride safe,\n{agent} at ZoomRide",
                       "- {agent}, ZoomRide Support"),
        "agents": ("Sam", "Priya", "Leo", "Jess", "Marco"),
    },
    "apparel-retail": {
        "greetings": ("Hi {first},", "Hello {first},", "Hi {first}, thank you for reaching out!"),
        "closings": (
            "Thank you for shopping with Threadline!", "We hope you love your new pieces.",
            "If there's anything else we can help with, just reply to this email.",
            "Happy styling!",
        ),
        "signatures": ("Warmly,\nThe Threadline Team", "With love,\n{agent} at Threadline",
                       "Best,\n{agent}\nThreadline Customer Care"),
        "agents": ("Nora", "Elise", "Jonah", "Camille", "Rosa"),
    },
    "banking": {
        "greetings": ("Dear {first},", "Dear {name},", "Good day {first},"),
        "closings": (
            "Thank you for banking with North Bank.",
            "Should you have any further questions, please do not hesitate to contact us.",
            "We appreciate your patience and your trust in North Bank.",
        ),
        "signatures": ("Kind regards,\nNorth Bank Customer Care", "Sincerely,\n{agent}\nNorth Bank",
                       "Yours sincerely,\nThe North Bank Support Team"),
        "agents": ("Margaret Hill", "David Osei", "Helen Park", "Robert Lang"),
    },
}  # fmt: skip

# What an agent says about each intent (the ticket's slots fill the placeholders).
_BODIES: dict[str, tuple[str, ...]] = {
    # ride-sharing
    "lost_item": (
        "Sorry to hear you left your {item} behind! I've messaged {driver} and asked them to "
        "check the car. You can also call the driver from the trip in your app within 24 hours.",
        "Oh no, your {item}! I've passed your details to {driver}, who will get in touch to "
        "arrange the return. A return fee of {fee} may apply.",
    ),
    "driver_complaint": (
        "I'm really sorry about your ride with {driver}. That's not the experience we want for "
        "you, and I've flagged the trip for our safety team to review.",
        "Thanks for telling us about {driver}. Drivers are expected to be respectful on every "
        "trip, so I've reported this and you won't be matched with them again.",
    ),
    "fare_dispute": (
        "I took a look at your trip to {dest}. You were quoted {quoted} but charged {amount}, so "
        "I've refunded the difference to your {card}. It should show up in 3-5 business days.",
        "Sorry about the surprise fare! The route to {dest} took longer than planned, but I've "
        "adjusted the price back to {quoted} and refunded the rest.",
    ),
    "refund_request": (
        "I've refunded {amount} to your {card}. Refunds usually take 3-5 business days to appear.",
        "No problem, I've processed a refund of {amount} for that trip. You'll see it on your "
        "{card} within a few days.",
    ),
    "account_access": (
        "Let's get you back in! I've sent a reset link to {email}. It's valid for 30 minutes, so "
        "try it soon.",
        "I've unlocked your account and sent a new sign-in code to {phone}. If it doesn't arrive, "
        "just reply here and I'll help.",
    ),
    "payment_method": (
        "To update your payment method, open the app, tap Wallet and add your new card. I've "
        "also removed the old {card} for you.",
        "Sorry for the trouble with {wallet}! I've reset the payment on your account, so you can "
        "add it again from the Wallet screen.",
    ),
    "safety_incident": (
        "Thank you for telling us, and I'm so sorry this happened. Your safety comes first: our "
        "safety team will call you at {phone} within the hour, and {driver} has been paused from "
        "driving while we look into it.",
        "I'm really sorry. I've escalated this to our safety team right away and {driver} can no "
        "longer accept trips while we investigate.",
    ),
    "promo_code": (
        "I checked the code {code} and it's expired, but I've added a {pct} credit to your "
        "account for your next ride.",
        "Sorry the code {code} didn't work! I've applied {pct} off your next trip manually, no "
        "code needed.",
    ),
    # apparel-retail
    "order_status": (
        "Your order {order} shipped with {carrier} and is on its way! You can follow it with the "
        "tracking link in your confirmation email.",
        "I checked on order {order}: it left our warehouse yesterday and {carrier} expects to "
        "deliver it within {days} days.",
    ),
    "return_request": (
        "Of course! I've emailed a prepaid return label to {email}. Once we receive the "
        "{product}, your refund of {amount} will be on its way within 5 business days.",
        "We're sorry the {product} wasn't right for you. Your return for order {order} is set "
        "up, and the label is in your inbox.",
    ),
    "exchange_size": (
        "Happy to help with the size! I've reserved the {product} in {new_size} for you and sent "
        "a prepaid label to return the {size}.",
        "No problem at all. Your exchange from {size} to {new_size} is booked, and the new "
        "{product} ships as soon as we scan your return.",
    ),
    "damaged_item": (
        "I'm so sorry your {product} arrived damaged! A replacement is already on its way, and "
        "there's no need to send the damaged one back.",
        "That's not the quality we stand for. I've refunded {amount} for the {product} on order "
        "{order}, and you're welcome to keep it.",
    ),
    "discount_code": (
        "I'm sorry the code {code} didn't apply! I've refunded {pct} of order {order} to your "
        "original payment method.",
        "Thanks for letting us know about {code}. It has expired, but I've added a {pct} "
        "discount to your account for your next order.",
    ),
    "cancel_order": (
        "Your order {order} has been cancelled and a full refund of {amount} is on its way. "
        "You'll see it in 3-5 business days.",
        "Done! I've cancelled order {order} before it shipped, so you won't be charged.",
    ),
    "shipping_address_change": (
        "I've updated the shipping address on order {order} to {address}. You'll get a new "
        "confirmation email shortly.",
        "Good news, order {order} hadn't shipped yet, so I changed the address to {address}.",
    ),
    "product_availability": (
        "The {product} in {color} is back in stock next week! I've added you to the waitlist, so "
        "you'll get an email the moment it's available.",
        "We're restocking the {product} in size {size} soon. I've signed you up for a restock "
        "alert at {email}.",
    ),
    # banking
    "card_lost_stolen": (
        "We have blocked your {card_kind} ending in {last4}, so it can no longer be used. A "
        "replacement card will arrive at your address on file within 5-7 business days.",
        "For your protection, the card ending in {last4} has been cancelled. Your new "
        "{card_kind} has been ordered, and no further transactions will be approved on the old "
        "card.",
    ),
    "dispute_transaction": (
        "We have opened a dispute for the charge of {amount} from {merchant}. A provisional "
        "credit has been applied to your account while we investigate, which may take up to 10 "
        "business days.",
        "Thank you for reporting the {amount} charge from {merchant}. Our disputes team will "
        "review it and contact you in writing within 10 business days.",
    ),
    "transfer_failed": (
        "We have reviewed your {transfer} of {transfer_amount} to {recipient}. It was returned "
        "by the receiving bank, and the funds are back in your account.",
        "The {transfer} of {transfer_amount} was held for a security check. It has now been "
        "released and should reach {recipient} within one business day.",
    ),
    "loan_inquiry": (
        "Thank you for your interest in a {loan}. For {loan_amount}, a loan officer will contact "
        "you within two business days to discuss your options and current rates.",
        "We would be glad to help you with a {loan} for {purpose}. You can start your "
        "application online, and a loan officer will review it with you.",
    ),
    "account_locked": (
        "Your online banking access was locked after several unsuccessful sign-in attempts. We "
        "have unlocked it, and you may now sign in and set a new password.",
        "For your security, your account was temporarily locked. We have verified your identity "
        "and restored your access.",
    ),
    "fee_refund": (
        "We have reviewed your account and refunded the {fee} of {fee_amount} as a courtesy. The "
        "credit will appear within two business days.",
        "As a one-time courtesy, the {fee_amount} {fee} has been reversed.",
    ),
    "update_contact_details": (
        "We have updated your {field} to {value}. A confirmation has been sent to your previous "
        "contact details for your security.",
        "Your {field} has been changed to {value} as requested.",
    ),
    "overdraft_question": (
        "Your account has an overdraft limit of {limit}. Overdraft fees apply only when a "
        "payment takes your balance below zero, and you can set up alerts in online banking.",
        "We have reviewed the overdraft on your account. Your current limit is {limit}, and you "
        "can change it at any branch or through online banking.",
    ),
}


def _fill(template: str, slots: dict[str, str]) -> str:
    text = _PLACEHOLDER.sub(lambda match: slots[match.group(1)], template)
    # A value ending a sentence with its own period ("Daniel E.") needs no second one.
    return re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)


def _as_agent(slots: dict[str, str]) -> dict[str, str]:
    """The ticket's slots as the agent speaks of them: the customer's "my sister" is "your
    sister" in the reply."""
    return {
        name: f"your {value[3:]}" if value.startswith("my ") else value
        for name, value in slots.items()
    }


def write_reply(
    vertical_or_slug: str, label: str, slots: dict[str, str], rng: random.Random
) -> str:
    """The tenant's reply to a ticket of intent ``label`` written with ``slots``."""
    vertical = tickets.DEMO_TENANTS.get(vertical_or_slug, {}).get("vertical", vertical_or_slug)
    voice = _VOICES[vertical]
    slots = {**_as_agent(slots), "agent": rng.choice(voice["agents"])}
    parts = [
        _fill(rng.choice(voice["greetings"]), slots),
        _fill(rng.choice(_BODIES[label]), slots),
    ]
    if rng.random() < 0.7:
        parts[-1] += " " + _fill(rng.choice(voice["closings"]), slots)
    parts.append(_fill(rng.choice(voice["signatures"]), slots))
    return "\n\n".join(parts)


def generate_replies(
    vertical_or_slug: str,
    *,
    rows: int,
    seed: int = 0,
    prefix_share: float = DEFAULT_PREFIX_SHARE,
) -> list[dict[str, str]]:
    """``{"text", "reply"}`` rows: tickets and the tenant's replies, intents balanced, plus
    ``prefix_share`` of rows whose text is the start of a reply and whose reply is the rest.
    Unique as the platform compares rows (folded text and reply), so none is dropped."""
    labels = tickets.labels_for(vertical_or_slug)
    if rows < 0 or rows > tickets.MAX_ROWS:
        raise ValueError(f"rows must be between 0 and {tickets.MAX_ROWS}, not {rows}.")
    rng = random.Random(f"replies:{vertical_or_slug}:{seed}")
    chosen = [labels[index % len(labels)] for index in range(rows)]
    rng.shuffle(chosen)
    seen: set[tuple[str, str]] = set()
    out: list[dict[str, str]] = []
    for label in chosen:
        for _ in range(_MAX_ATTEMPTS):
            text, slots = tickets.sample_ticket(vertical_or_slug, label, rng)
            reply = write_reply(vertical_or_slug, label, slots, rng)
            if rng.random() < prefix_share:
                text, reply = _split_reply(reply, rng)
            key = (fold_text(text), fold_text(reply))
            if key not in seen:
                seen.add(key)
                out.append({"text": text, "reply": reply})
                break
        else:
            raise ValueError(
                f"More rows were asked for than can be generated uniquely: only {len(out)} made."
            )
    return out


def _split_reply(reply: str, rng: random.Random) -> tuple[str, str]:
    """A reply cut after a few of its words: (the start, the rest)."""
    words = reply.split(" ")
    cut = rng.randint(2, max(2, len(words) // 2))
    return " ".join(words[:cut]), " ".join(words[cut:])
