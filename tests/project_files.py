"""The settings file a test project starts from: one builder instead of a copy per test file."""

from __future__ import annotations

# The lists a test project may configure, with the wording a subscriber agreed to.
LISTS = {
    "newsletter": ("Nieuwsbrief", "Ja, ik wil de nieuwsbrief."),
    "offers": ("Aanbiedingen", "Ja, stuur mij aanbiedingen."),
}


def settings_toml(
    smtp_port: int,
    database_url: str,
    *,
    lists: tuple[str, ...] = ("newsletter",),
    sender: str = "",
    smtp: str = "",
    throttle: str = "messages_per_second = 0",
    extra: str = "",
) -> str:
    """A `mailer.toml` for the Bakkerij Voorbeeld test project, sending to `smtp_port`.

    `sender`, `smtp` and `throttle` are extra lines for those sections; `extra` is appended
    (more sections). The sender is complete: Telecommunicatiewet art. 11.7 asks for identity.
    """
    list_sections = "".join(
        f'[lists.{name}]\ntitle = "{LISTS[name][0]}"\nwording = "{LISTS[name][1]}"\n'
        for name in lists
    )
    return f"""[sender]
organization = "Bakkerij Voorbeeld B.V."
from_name = "Bakkerij Voorbeeld"
from_address = "nieuws@bakkerij.example"
postal_address = "Dorpsstraat 1, 1234 AB Voorbeeld"
{sender}
[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
{smtp}
[throttle]
{throttle}
[database]
url = "{database_url}"
{list_sections}{extra}
"""


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of `text` that holds `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)
