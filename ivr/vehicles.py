"""The kinds of vehicle a caller names for the ITV (the fee depends on it)."""

from __future__ import annotations

from config.knowledge import KnowledgeConfig
from ivr import speak

VEHICLE_WORDS = {
    "turismo": ["turismo", "coche", "carro", "auto", "automovil", "vehiculo particular"],
    "motocicleta": ["motocicleta", "moto"],
    "ciclomotor": ["ciclomotor", "scooter", "vespino"],
    "furgoneta": ["furgoneta", "furgon", "camioneta"],
}


def match_vehicle(text: str, knowledge: KnowledgeConfig) -> str | None:
    words = f" {speak.fold(text)} "
    for vehicle, names in VEHICLE_WORDS.items():
        if any(f" {n}" in words for n in names):
            return vehicle
    return None
