"""Amazon SES through SNS: signatures checked against a certificate the test makes, the
subscription confirmed, bounces and complaints recorded once."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from double_optin.sns import string_to_sign
from tests.webhook_support import (  # noqa: F401  (world_fixture: the fixture `world`)
    CERT_URL,
    OTHER_KEY,
    SNS_KEY,
    TOPIC,
    World,
    example,
    post,
    state,
    world_fixture,
)

pytestmark = pytest.mark.anyio


def sns(
    message_type: str,
    world: World,
    *,
    message: str,
    message_id: str,
    version: str = "1",
    key: rsa.RSAPrivateKey = SNS_KEY,
    **fields: str,
) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "Type": message_type,
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2026-11-16T09:12:38.655Z",
        "SignatureVersion": version,
        "SigningCertURL": CERT_URL,
        **fields,
    }
    if message_type == "Notification":
        envelope["UnsubscribeURL"] = (
            "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
            f"{TOPIC}:c9135db0-26c4-47ec-8998-413945fb5a96"
        )
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    envelope["Signature"] = base64.b64encode(signature).decode()
    return envelope


def ses(name: str, world: World, recipient: str) -> str:
    notification = example(name)
    message_id = world.message_ids[recipient]
    notification["mail"]["commonHeaders"]["messageId"] = message_id
    notification["mail"]["headers"][2]["value"] = message_id
    for people in ("bouncedRecipients", "complainedRecipients"):
        for person in notification.get(name.split("-")[1].split(".")[0], {}).get(people, []):
            person["emailAddress"] = recipient
    return json.dumps(notification)


async def test_ses_subscription_is_confirmed_by_its_subscribe_url(world: World) -> None:
    subscribe = (
        f"https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
        f"{TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de12884c4"
    )
    body = sns(
        "SubscriptionConfirmation",
        world,
        message="You have chosen to subscribe.",
        message_id="165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        SubscribeURL=subscribe,
        Token="2336412f37fb687f5d51e6e2425c464de12884c4",
    )
    answer = await post(world.app, "/webhooks/ses", body, **{"content-type": "text/plain"})
    assert (answer.status_code, answer.json()) == (200, {"status": "subscribed"})
    assert world.fetcher.fetched == [CERT_URL, subscribe]


async def test_ses_bounces_and_complaints_signed_by_sns_are_recorded_once(world: World) -> None:
    bounce = sns(
        "Notification",
        world,
        message=ses("ses-bounce.json", world, "anna@example.nl"),
        message_id="22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    )
    complaint = sns(
        "Notification",
        world,
        version="2",
        message=ses("ses-complaint.json", world, "bram@example.nl"),
        message_id="5f2c7e01-24c4-4d3b-9b1c-3e6bdb8c6f01",
    )
    for body, counted in ((bounce, {"hard_bounce": 1}), (complaint, {"complaint": 1})):
        answer = await post(world.app, "/webhooks/ses", body, **{"content-type": "text/plain"})
        assert (answer.status_code, answer.json()) == (
            200,
            {"status": "recorded", "counted": counted},
        )
    recorded = state(world.engine)
    assert recorded[0] == [("complaint", None), ("hard_bounce", None)]
    assert recorded[1]["anna@example.nl"] == ("failed", "hard_bounce")
    assert recorded[1]["bram@example.nl"] == ("sent", "complaint")
    again = await post(world.app, "/webhooks/ses", bounce)  # SNS retries
    assert again.json() == {"status": "already_recorded"}
    assert state(world.engine) == recorded
    assert world.fetcher.fetched == [CERT_URL]  # fetched once, then cached


async def test_ses_refuses_what_sns_did_not_sign(world: World) -> None:
    before = state(world.engine)
    message = ses("ses-bounce.json", world, "anna@example.nl")
    other_signer = sns("Notification", world, message=message, message_id="m-1", key=OTHER_KEY)
    tampered = sns("Notification", world, message=message, message_id="m-2")
    tampered["Message"] = ses("ses-bounce.json", world, "cees@example.nl")
    own_certificate = sns(
        "Notification",
        world,
        message=message,
        message_id="m-3",
        SigningCertURL="https://evil.example/SimpleNotificationService.pem",
    )
    plain_http = sns(
        "Notification",
        world,
        message=message,
        message_id="m-4",
        SigningCertURL=CERT_URL.replace("https:", "http:"),
    )
    lookalike = sns(
        "Notification",
        world,
        message=message,
        message_id="m-5",
        SigningCertURL=CERT_URL.replace(".com/", ".com.evil.example/"),
    )
    foreign_topic = sns(
        "Notification",
        world,
        message=message,
        message_id="m-6",
        TopicArn="arn:aws:sns:eu-west-1:999999999999:someone-else",
    )
    unsigned = dict(tampered)
    del unsigned["Signature"]
    for body in (
        other_signer,
        tampered,
        own_certificate,
        plain_http,
        lookalike,
        foreign_topic,
        unsigned,
    ):
        answer = await post(world.app, "/webhooks/ses", body)
        assert answer.status_code == 401, answer.text
    assert state(world.engine) == before
    assert set(world.fetcher.fetched) <= {CERT_URL}  # never a certificate from elsewhere
