"""Campaign runs against a real SMTP server: what arrives (one recipient, sender identity,
working unsubscribe links) and what the ledger records for every contact.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from sqlalchemy import Engine, select

from mailer.config import Settings
from mailer.core.policy import ConsentFact, PurchaseFact, SuppressionFact
from mailer.core.tokens import TokenSigner
from mailer.delivery.sink import SmtpSink
from mailer.store.models import Contact, Delivery
from tests.factories import add_contact
from tests.sending_support import DAY, NOW, REQ, WEB, ledger, parsed, received, send, subscribed

# -- what arrives -----------------------------------------------------------------------------


def test_every_message_has_one_recipient_the_sender_identity_and_working_unsubscribe_links(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    ids = {
        add_contact(engine, send_settings, f"p{n}@example.nl", at=NOW, first_name="Joël",
                    consents=subscribed()): f"p{n}@example.nl"
        for n in range(4)
    }  # fmt: skip
    send(engine, send_settings, "nov")
    signer = TokenSigner(send_settings.secret_keys)
    assert received(sink) == sorted(ids.values())
    for captured in sink.messages:
        assert len(captured.recipients) == 1  # rule 4: never a Bcc list
        recipient = captured.recipients[0]
        message = parsed(captured.data)
        assert [a.addr_spec for a in message["To"].addresses] == [recipient]
        assert len(message.get_all("To") or []) == 1
        assert message.get_all("Bcc") is None and message.get_all("Cc") is None
        assert not message.defects
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        text, html = (p.get_content() for p in parts)

        header = str(message["List-Unsubscribe"])
        https = re.findall(r"<(https://bakkerij\.example/unsubscribe/[^>]+)>", header)
        mailto = re.findall(r"<mailto:([^?>]+)\?subject=([^>]+)>", header)
        assert len(https) == 1 and len(mailto) == 1
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        for body in (text, html):
            assert "Bakkerij Voorbeeld B.V." in body
            assert "Dorpsstraat 1, 1234 AB Voorbeeld" in body
            assert https[0] in body
        assert f'href="{https[0]}"' in html

        url_token = https[0].rsplit("/", 1)[1]
        mailto_token = unquote(mailto[0][1]).split()[-1]
        for token in (url_token, mailto_token):
            claim = signer.read_unsubscribe(token)
            assert (ids[claim.contact_id], claim.list_name) == (recipient, "newsletter")


def test_the_ledger_has_one_row_per_contact_with_its_basis_or_reason_and_the_message_id(
    engine: Engine, send_settings: Settings, sink: SmtpSink
) -> None:
    add_contact(engine, send_settings, "anna@example.nl", at=NOW, consents=subscribed())
    add_contact(engine, send_settings, "dirk@example.nl", at=NOW,
                purchases=[PurchaseFact("brood", NOW - 40 * DAY, True)])  # fmt: skip
    add_contact(engine, send_settings, "bram@example.nl", at=NOW,
                consents=[ConsentFact("newsletter", REQ, WEB, NOW - 3 * DAY)])  # fmt: skip
    add_contact(engine, send_settings, "ingrid@example.nl", at=NOW, consents=subscribed(),
                suppressions=[SuppressionFact("unsubscribed", NOW - 2 * DAY)])  # fmt: skip
    add_contact(engine, send_settings, "henk@example.nl", at=NOW)
    campaign = send(engine, send_settings, "nov")

    assert ledger(engine, campaign) == {
        "anna@example.nl": ("anna@example.nl", "sent", "consent", None, 1),
        "dirk@example.nl": ("dirk@example.nl", "sent", "existing_customer", None, 1),
        "bram@example.nl": ("bram@example.nl", "skipped", None, "pending_confirmation", 0),
        "ingrid@example.nl": ("ingrid@example.nl", "skipped", None, "suppressed", 0),
        "henk@example.nl": ("henk@example.nl", "skipped", None, "no_basis", 0),
    }
    arrived = {m.recipients[0]: parsed(m.data)["Message-ID"] for m in sink.messages}
    with engine.connect() as conn:
        stored = dict(
            conn.execute(
                select(Contact.email, Delivery.message_id)
                .join(Contact, Contact.id == Delivery.contact_id)  # type: ignore[arg-type]
                .where(Delivery.status == "sent")
            ).all()
        )
    assert stored == arrived
    assert len(set(arrived.values())) == 2
