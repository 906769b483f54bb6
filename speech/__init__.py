"""Speech: speech-to-text with endpointing, text-to-speech, prompt cache. Knows nothing of calls.

The async entry point is `speech.service.Speech` (runtime.speech).
"""
