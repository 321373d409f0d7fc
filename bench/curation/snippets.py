"""The text the corpus generator plants besides the bundled raw corpus: foreign-language pages
(data/raw has no non-English text), spam and navigation, toxic lines, lorem ipsum, and PII with
valid checksums (cards pass Luhn, IBANs mod 97), so that each block meets what it is for."""

from __future__ import annotations

import numpy as np

FOREIGN = {
    "de": [
        "Der Zug nach Hamburg hatte heute Morgen wieder einmal eine halbe Stunde Verspätung.",
        "In der Altstadt gibt es viele kleine Geschäfte, Cafés und einen schönen Marktplatz.",
        "Die Gemeinde hat beschlossen, die Bibliothek im nächsten Jahr zu renovieren.",
        "Wir haben am Wochenende einen langen Spaziergang durch den Wald gemacht.",
        "Das Wetter bleibt bis Donnerstag wechselhaft, danach wird es deutlich wärmer.",
        "Für die Anmeldung benötigen Sie einen gültigen Ausweis und eine Meldebescheinigung.",
        "Meine Großmutter hat mir beigebracht, wie man einen guten Apfelkuchen backt.",
        "Die Ergebnisse der Studie wurden gestern in einer Fachzeitschrift veröffentlicht.",
        "Nach dem Konzert sind wir noch lange am Fluss sitzen geblieben.",
        "Bitte lesen Sie die Gebrauchsanweisung sorgfältig, bevor Sie das Gerät benutzen.",
    ],
    "fr": [
        "Le marché du samedi matin attire toujours beaucoup de monde sur la place du village.",
        "Nous avons visité le musée pendant les vacances et les enfants ont adoré.",
        "La réunion du conseil municipal est reportée à la semaine prochaine.",
        "Il faut compter environ deux heures de route pour rejoindre la côte.",
        "Les travaux de rénovation de la gare devraient se terminer avant l'été.",
        "Ma sœur prépare une excellente soupe aux légumes quand il fait froid.",
        "Le professeur a expliqué la leçon avec beaucoup de patience et de clarté.",
        "Pour obtenir ce document, il suffit de remplir le formulaire en ligne.",
        "Après le dîner, nous nous sommes promenés le long du canal.",
        "Les chercheurs ont présenté leurs résultats lors d'un colloque à Lyon.",
    ],
    "es": [
        "El autobús que va al centro de la ciudad pasa cada quince minutos.",
        "Mis abuelos viven en un pueblo pequeño rodeado de montañas y olivos.",
        "La biblioteca municipal amplía su horario durante la época de exámenes.",
        "Ayer por la tarde fuimos al cine y después cenamos en un restaurante nuevo.",
        "El ayuntamiento anunció que las obras de la plaza terminarán en mayo.",
        "Para hacer una buena tortilla hacen falta huevos, patatas y paciencia.",
        "Los estudiantes presentaron su proyecto ante un jurado de profesores.",
        "Este verano queremos recorrer la costa en bicicleta durante una semana.",
        "Según el informe, el consumo de agua ha bajado un diez por ciento.",
        "Por favor, apague el teléfono móvil antes de entrar en la sala.",
    ],
}
SPAM = [
    "Buy cheap watches online now!!! Best prices guaranteed.",
    "CLICK HERE to claim your free prize",
    "Hot deals hot deals hot deals",
    "Limited offer: 90% off all replica bags, free shipping worldwide.",
]
NAV = [
    "Home",
    "About us",
    "Products",
    "Blog",
    "Contact",
    "Login",
    "Register",
    "FAQ",
    "Shopping cart",
    "Sitemap",
    "Careers",
    "Press",
    "Terms",
    "Help",
]
TOXIC = [
    "You are a stupid idiot and nobody wants you here.",
    "Shut up, you worthless moron, you make me sick.",
    "What a pathetic loser, go kill yourself.",
    "This is the dumbest crap I have ever read, you fucking idiot.",
]
LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat."
)
NAMES = ["anna", "ben", "carla", "david", "elena", "farid", "greta", "hiro", "ines", "jonas"]
SURNAMES = ["smith", "meyer", "garcia", "rossi", "novak", "kim", "dubois", "silva", "olsen"]
DOMAINS = ["example-mail.com", "postbox.de", "webmail.fr", "uni-nord.edu", "company.co.uk"]


def pii_sentence(rng: np.random.Generator) -> str:
    """A sentence carrying an e-mail address, a phone number, a public IP, a card or an IBAN."""
    email = f"{rng.choice(NAMES)}.{rng.choice(SURNAMES)}{rng.integers(100)}@{rng.choice(DOMAINS)}"
    phone = (
        f"+44 20 7946 {rng.integers(1000, 9999)}"
        if rng.random() < 0.5
        else f"({rng.integers(201, 989)}) 555-{rng.integers(1000, 9999)}"
    )
    ip = (
        f"{rng.choice([23, 45, 81, 91, 104, 151, 185, 212])}.{rng.integers(256)}."
        f"{rng.integers(256)}.{rng.integers(1, 255)}"
    )
    return str(
        rng.choice(
            [
                f"For questions write to {email} or call {phone}.",
                f"The request came from {ip} and was logged by the server.",
                f"Card number {luhn_number(rng)} was charged for the order.",
                f"Please transfer the fee to IBAN {iban_number(rng)} before Friday.",
                f"Contact: {email}, phone {phone}, last login from {ip}.",
            ]
        )
    )


def luhn_number(rng: np.random.Generator) -> str:
    digits = [4, *rng.integers(0, 10, size=14).tolist()]
    total = sum(
        d if i % 2 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits))
    )
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def iban_number(rng: np.random.Generator) -> str:
    bban = "".join(map(str, rng.integers(0, 10, size=18).tolist()))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    s = f"DE{check:02d}{bban}"
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))
