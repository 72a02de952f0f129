"""A campaign mailer that only mails people it may mail, and proves why it mailed each one."""

from mailer.errors import MailerError
from mailer.policy import Basis, Decision, SkipReason, decide

__all__ = ["Basis", "Decision", "MailerError", "SkipReason", "decide"]
__version__ = "0.1.0"
