"""A local SMTP mailbox: a real SMTP server on 127.0.0.1 that keeps the mail it receives, and a page to read it.

Test and demo infrastructure only; never deployed (in Azure the app sends through Azure Communication
Services). Start it with `python -m emulators.mailbox` or in-process with `emulators.mailbox.Mailbox`.
"""

from emulators.mailbox.server import Mailbox
from emulators.mailbox.store import MailMessage

__all__ = ["MailMessage", "Mailbox"]
