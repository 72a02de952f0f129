"""A campaign mailer that only mails people it may mail, and proves why it mailed each one."""

from mailer.core.policy import Basis, Decision, SkipReason, decide
from mailer.errors import MailerError

__all__ = ["Basis", "Decision", "MailerError", "SkipReason", "decide"]
__version__ = "0.1.0"
