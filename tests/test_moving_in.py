"""Moving in from Mailchimp and WooCommerce, end to end through the real `mailer` command.

The bakery imports Mailchimp's subscribed, unsubscribed and cleaned exports and its WooCommerce
order export. Then `campaign plan` (and `campaign send`, into a real SMTP sink) mails exactly the
confirmed subscribers and the customers of the campaign's category who never unsubscribed or
bounced: nobody who unsubscribed in Mailchimp comes back as an "existing customer".
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from mailer.delivery.sink import SmtpSink
from tests.process_support import mailer
from tests.project_files import settings_toml

DATA = Path(__file__).parent / "data" / "imports"

THROTTLE = "messages_per_second = 0\nper_domain_per_minute = 0"

CONFIRMED = {
    "anna.bakker@example.nl", "jan.jansen@example.nl", "renee.dubois@example.be",
    "piet.de.vries@example.nl", "mark.smit@example.nl", "lotte.meijer@example.nl",
    "daan.mulder@example.nl", "eva.bos@example.nl", "tim.vos@example.nl",
    "fleur.peters@example.nl", "bram.hendriks@example.nl", "iris.van.dijk@example.nl",
    "koen.dekker@example.nl", "noor.brouwer@example.nl", "sem.de.wit@example.nl",
    "julia.dijkstra@example.nl", "lucas.smits@example.nl", "anne-marie.janssens@example.be",
    "thomas.maes@example.be", "femke.willems@example.be", "ruben.claes@example.be",
    "zoe.goossens@example.be", "milan.wouters@example.be",
}  # fmt: skip
# Bought "Gebak" or below it, never unsubscribed or bounced (lisa's signup is still pending).
GEBAK_CUSTOMERS = {
    "bas.timmer@example.nl", "marloes.vink@example.nl", "lisa.kok@example.nl",
    "pieter.zwart@example.nl",
}  # fmt: skip


@pytest.fixture
def project(tmp_path: Path, sink: SmtpSink) -> Path:
    for name in DATA.iterdir():
        shutil.copy(name, tmp_path / name.name)
    config = tmp_path / "mailer.toml"
    settings = settings_toml(
        sink.port,
        f"sqlite:///{tmp_path / 'm.db'}",
        lists=("newsletter", "offers"),
        throttle=THROTTLE,
    )
    config.write_text(settings, encoding="utf-8")
    assert mailer(config, "init").returncode == 0
    return config


def table_rows(out: str) -> dict[tuple[str, str], int]:
    rows = re.findall(r"^│ (\w+) +│ ([\w ]*?) *│ +(\d+) │$", out, flags=re.MULTILINE)
    return {(kind, label): int(n) for kind, label, n in rows}


def run(config: Path, *args: str) -> str:
    done = mailer(config, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_after_moving_in_the_plan_mails_exactly_the_confirmed_and_the_unsuppressed_customers(
    project: Path, sink: SmtpSink
) -> None:
    folder = project.parent
    out = run(project, "contacts", "import", str(folder / "mailchimp-subscribed.csv"),
              "--format", "mailchimp", "--list", "newsletter")  # fmt: skip
    assert "30 rows imported (contacts); 30 contacts new, 0 updated, 54 consent events" in out
    ignored = [line for line in out.splitlines() if line.startswith("Columns not needed")]
    assert ignored == [
        "Columns not needed and left out: Address, Birthday, MEMBER_RATING, LATITUDE, "
        "LONGITUDE, GMTOFF, DSTOFF, TIMEZONE, CC, REGION, LAST_CHANGED, LEID, EUID, NOTES, TAGS."
    ]
    out = run(project, "suppressions", "import", str(folder / "mailchimp-unsubscribed.csv"),
              "--format", "mailchimp")  # fmt: skip
    assert "6 rows; 6 suppressions added (unsubscribed, all lists), 0 already suppressed." in out
    out = run(project, "suppressions", "import", str(folder / "mailchimp-cleaned.csv"),
              "--format", "mailchimp")  # fmt: skip
    assert "4 rows; 4 suppressions added (hard_bounce, all lists), 0 already suppressed." in out
    out = run(project, "customers", "import", str(folder / "woocommerce-orders.csv"),
              "--format", "woocommerce", "--optout-offered")  # fmt: skip
    assert "19 rows imported (customers); 8 contacts new" in out
    assert "1 row left out: order status cancelled (not a sale)." in out

    refused = mailer(project, "campaign", "create", "taart", "--list", "newsletter", "--subject",
                     "Taart", "--template", "newsletter", "--category", "Taart")  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        'error: --category "Taart": no purchase is of this category or one below it'
    )
    assert '"Cadeau", "Gebak", "Gebak > Koekjes", "Gebak > Taarten"' in refused.stderr
    run(project, "campaign", "create", "voorjaar", "--list", "newsletter", "--subject",
        "Voorjaarsgebak", "--template", "newsletter", "--category", "gebak")  # fmt: skip

    plan = table_rows(run(project, "campaign", "plan", "voorjaar"))
    assert plan == {
        ("send", "consent"): len(CONFIRMED),
        ("send", "existing_customer"): len(GEBAK_CUSTOMERS),
        # sanne (subscribed, then unsubscribed), kees, wendy and ahmed (customers who
        # unsubscribed in Mailchimp), rob (a customer whose address bounced).
        ("skip", "suppressed"): 5,
        ("skip", "pending_confirmation"): 5,
        ("skip", "other_category"): 1,  # nina bought only bread
        ("total", "27 to send"): 38,
    }
    assert sink.messages == []

    run(project, "campaign", "send", "voorjaar")
    assert sorted(m.recipients[0] for m in sink.messages) == sorted(CONFIRMED | GEBAK_CUSTOMERS)

    # Why was Bas mailed? The sale, in shop time stored as UTC, with the opt-out offered.
    shown = run(project, "consent", "show", "bas.timmer@example.nl")
    assert shown.splitlines()[-3:] == [
        "Purchases (the existing-customer basis), oldest first (times in UTC):",
        "2024-03-02 09:02:33  Brood  (opt-out offered)",
        "2024-03-02 09:02:33  Gebak > Koekjes  (opt-out offered)",
    ]


def test_a_control_character_in_evidence_exits_2_naming_file_line_and_column(
    project: Path,
) -> None:
    path = project.parent / "contacts.csv"
    path.write_text("email;list;source\njan@example.nl;newsletter;beurs\x1b[2J\n", "utf-8")

    done = mailer(project, "contacts", "import", str(path))

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f'error: {path}:2: column "source": contains the control character U+001B at '
        "position 6; evidence must read as it was given, remove it."
    )
    assert "0 rows" not in done.stdout


def test_reimporting_customers_with_a_new_objection_reports_it(project: Path) -> None:
    path = project.parent / "customers.csv"
    path.write_text("email,category,purchased_at,optout_offered\n"
                    "jan@example.nl,Brood,2026-01-05,true\n", "utf-8")  # fmt: skip
    run(project, "customers", "import", str(path))
    path.write_text("email,category,purchased_at,optout_offered,objected_at\n"
                    "jan@example.nl,Brood,2026-01-05,true,2026-02-01\n", "utf-8")  # fmt: skip

    out = run(project, "customers", "import", str(path))

    assert "0 purchases, 1 objections recorded." in out
    shown = run(project, "consent", "show", "Jan@example.nl").splitlines()
    assert shown[-2:] == [
        "Purchases (the existing-customer basis), oldest first (times in UTC):",
        "2026-01-05 00:00:00  Brood  (opt-out offered; objected 2026-02-01 00:00:00)",
    ]
