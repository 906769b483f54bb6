"""Digital channels: web chat, Telegram, WhatsApp and e-mail, all through one assistant (`assistant.py`)."""
