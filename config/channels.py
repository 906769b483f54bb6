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


class TelegramConfig(Strict):
    enabled: bool = True
    bot_token: str = ""
    # Compared with the X-Telegram-Bot-Api-Secret-Token header set through setWebhook(secret_token=...).
    webhook_secret: str = ""
    api_base: str = "https://api.telegram.org"
    timeout_s: float = Field(10.0, gt=0)


class WhatsappConfig(Strict):
    enabled: bool = True
    verify_token: str = ""  # hub.verify_token of the GET handshake
    app_secret: str = ""  # HMAC-SHA256 key for X-Hub-Signature-256
    access_token: str = ""  # Bearer token for the Graph API
    phone_number_id: str = ""  # default sender when a webhook carries none
    api_base: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    timeout_s: float = Field(10.0, gt=0)


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
