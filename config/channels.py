"""Digital channels: web chat, Telegram, WhatsApp Cloud API and e-mail.

Secrets default to empty: a channel whose secret is empty refuses its webhook (403), so a
fresh install never accepts unauthenticated messages by accident.
"""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class WebchatConfig(Strict):
    enabled: bool = True
    greeting: str = "Hola, soy el asistente de atención a la ciudadanía. ¿En qué puedo ayudarle?"
    max_message_chars: int = Field(2000, ge=1)
    # Per chat session: messages allowed per window (citizen-facing input is rate-limited).
    rate_limit: int = Field(20, ge=1)
    rate_window_s: int = Field(60, ge=1)
    # Per client address (the session id is the client's choice): open sockets at once on this node, and new
    # connections per window. Messages per address follow desk.rate_limits.chat.
    max_sockets_per_address: int = Field(8, ge=1)
    connect_limit: int = Field(30, ge=1)
    connect_window_s: int = Field(60, ge=1)


class TelegramConfig(Strict):
    enabled: bool = True
    bot_token: str = ""
    # Compared with the X-Telegram-Bot-Api-Secret-Token header set through setWebhook(secret_token=...).
    webhook_secret: str = ""
    api_base: str = "https://api.telegram.org"
    timeout_s: float = Field(10.0, gt=0)
    # A 429 answer's retry_after is honoured up to this long, at most `max_retries` times; past it the send fails.
    max_retry_after_s: float = Field(30.0, ge=0)
    max_retries: int = Field(2, ge=0, le=5)
    # Told once per group chat: conversations are private (members' messages must never share a ticket).
    group_notice: str = "Para atenderle, escríbame por privado, por favor."


class WhatsappConfig(Strict):
    enabled: bool = True
    verify_token: str = ""  # hub.verify_token of the GET handshake
    app_secret: str = ""  # HMAC-SHA256 key for X-Hub-Signature-256
    access_token: str = ""  # Bearer token for the Graph API
    phone_number_id: str = ""  # default sender when a webhook carries none
    api_base: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    timeout_s: float = Field(10.0, gt=0)
    # Free-form messages reach the citizen only within 24 h of their last message; later, this approved
    # template (name and language as approved in WhatsApp Manager) is sent instead, with the ticket's reference
    # as its one body parameter when `template_ref_param`, and the reply waits until the citizen writes again.
    window_s: int = Field(86400, ge=60)
    # Meta retries an unacknowledged notification for up to 7 days: a message older than this is a replay. One
    # older than `window_s` still reaches its ticket; only the assistant's free-form answer is not sent (it would fail).
    replay_window_s: int = Field(7 * 86400, ge=60)
    template_name: str = "consulta_respuesta_disponible"
    template_language: str = "es"
    template_ref_param: bool = True


class EmailConfig(Strict):
    enabled: bool = True
    # Shared secret for the inbound endpoint (X-Atiende-Inbound-Token), set in the MTA's delivery hook.
    inbound_token: str = ""
    address: str = "atencion@example.org"  # our From address
    display_name: str = "Atención a la Ciudadanía"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: str = ""
    timeout_s: float = Field(10.0, gt=0)
    max_bytes: int = Field(2_000_000, ge=1024)
    # How long a Message-ID is remembered for de-duplication (an MTA retries for 4-5 days). Mail is never refused
    # for its age: the sender's Date header is the sender's word, and a queue may hold genuine mail for days.
    replay_window_s: int = Field(7 * 86400, ge=60)
    # The authserv-id our own MTA writes in its Authentication-Results header (RFC 8601; the MTA must remove such
    # headers arriving from outside). Reply-To is honoured only when that header says dmarc=pass: otherwise anyone
    # could forge a citizen's From and have the replies sent elsewhere. Empty: no header is trusted, replies go to From.
    trusted_authserv_id: str = ""
    # The assistant's automatic answers by e-mail, all senders together, per window: anyone can forge a From, so
    # without a ceiling the service would mail whoever they name (a reflector). Past it, answers are not sent.
    auto_reply_limit: int = Field(300, ge=1)
    auto_reply_window_s: int = Field(3600, ge=60)
    # Status lookups by e-mail, all senders together, per status_rate_window_s: the per-sender limit alone does not
    # hold when every mail forges another From (reference guessing).
    status_rate_limit_global: int = Field(60, ge=1)


class ChannelsConfig(Strict):
    webchat: WebchatConfig = Field(default_factory=WebchatConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    whatsapp: WhatsappConfig = Field(default_factory=WhatsappConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    # Messages per sender (chat id, phone, address) and window on every channel; past it a message is dropped unanswered.
    message_rate_limit: int = Field(30, ge=1)
    message_rate_window_s: int = Field(60, ge=1)
    # Status lookups by chat ("¿cómo va mi consulta?") per citizen and window.
    status_rate_limit: int = Field(10, ge=1)
    status_rate_window_s: int = Field(60, ge=1)
    # Telegram deliveries whose own timestamp is older than this are refused as replays (WhatsApp has its own; the
    # de-duplication memory lasts a little longer than the window, so an old id cannot come back unnoticed).
    replay_window_s: int = Field(86400, ge=60)
    # Attachments kept on tickets (under data_dir/attachments, path and sha256 on the interaction).
    attachment_max_bytes: int = Field(10_000_000, ge=1024)
    attachments_per_message: int = Field(5, ge=0, le=20)
    # Bytes of files kept per sender (chat id, phone, address) and day, all channels' files counted where they arrive;
    # past it files are refused (the agent sees that they came): a sender cannot fill the disk.
    attachment_daily_bytes: int = Field(100_000_000, ge=1024)
    attachment_types: list[str] = Field(default_factory=lambda: [
        "image/jpeg", "image/png", "image/webp", "application/pdf", "audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac",
        "audio/amr", "video/mp4", "text/plain", "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.oasis.opendocument.text"])
    # Voice notes are transcribed with the calls' speech engine (at most this long; longer ones are kept untranscribed).
    transcribe_voice: bool = True
    max_voice_s: float = Field(120.0, gt=0)
