"""Check rules for identifiers, as pure functions: a value that fails its rule is not the identifier.

These are what let the finders match broad shapes (any separator, any case) without redacting ordinary
numbers: a random 16-digit number passes Luhn one time in ten, a random IBAN-shaped string passes mod-97
one time in 97 and only if its country's length is right. Each function takes the value with separators
already removed (upper case where letters occur) unless it says otherwise.

Sources: ISO/IEC 7812 (Luhn), ISO 13616 (IBAN), SSA (SSN area/group/serial), HMRC NIM39110 (NINO
prefixes), ISO 7064 MOD 11-2 (China) and MOD 11,10 (German Steuer-ID), Verhoeff (Aadhaar), the published
check-digit rules of CPF, NIR, codice fiscale, DNI/NIE, Japan's My Number, BSN and Swedish personnummer.
"""

from __future__ import annotations

import datetime
import math
from collections import Counter


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s character distribution."""
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def luhn_is_valid(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = int(ch) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


# ISO 13616 registry: country code -> IBAN length (SWIFT IBAN registry, 2024).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_is_valid(value: str) -> bool:
    """ISO 13616: a registered country's length, and the rearranged numeric form is 1 modulo 97."""
    compact = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2], 15) != len(compact) or not 15 <= len(compact) <= 34:
        return False
    if not compact[:2].isalpha() or not compact[2:4].isdigit() or not compact.isalnum() or not compact.isascii():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_is_valid(digits: str) -> bool:
    """US SSN: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_NINO_BAD_FIRST = set("DFIQUV")
_NINO_BAD_SECOND = set("DFIOQUV")
_NINO_UNALLOCATED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def nino_is_valid(value: str) -> bool:
    """UK National Insurance number: allowed two-letter prefix, six digits, suffix A-D."""
    if len(value) != 9 or not value[:2].isalpha() or not value[2:8].isdigit() or value[8] not in "ABCD":
        return False
    prefix = value[:2]
    return (prefix[0] not in _NINO_BAD_FIRST and prefix[1] not in _NINO_BAD_SECOND
            and prefix not in _NINO_UNALLOCATED)


def sin_is_valid(digits: str) -> bool:
    """Canadian SIN: nine digits, Luhn, never starting with 0 or 8."""
    return len(digits) == 9 and digits.isdigit() and digits[0] not in "08" and luhn_is_valid(digits)


def nir_is_valid(value: str) -> bool:
    """French NIR (numéro de sécurité sociale): 13 characters + key = 97 - (number mod 97)."""
    if len(value) != 15 or value[0] not in "123478":
        return False
    body = value[:13].replace("2A", "19").replace("2B", "18")
    if not body.isdigit() or not value[13:].isdigit():
        return False
    return 97 - int(body) % 97 == int(value[13:])


_CF_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]
_CF_OMOCODE = "LMNPQRSTUV"  # letters that stand for 0-9 when two people would share a code


def codice_fiscale_is_valid(value: str) -> bool:
    """Italian codice fiscale: 16 characters, the last a check letter over odd/even position tables."""
    if len(value) != 16 or not value.isalnum() or not value.isascii():
        return False
    total = 0
    for position, ch in enumerate(value[:15]):
        index = int(ch) if ch.isdigit() else ord(ch) - ord("A")
        total += _CF_ODD[index] if position % 2 == 0 else index
    return chr(ord("A") + total % 26) == value[15]


def codice_fiscale_digits(value: str) -> str:
    """The positions that must be digits, with omocode letters mapped back (for shape checks)."""
    positions = (6, 7, 9, 10, 12, 13, 14)
    return "".join(str(_CF_OMOCODE.index(value[p])) if value[p] in _CF_OMOCODE else value[p] for p in positions)


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_is_valid(value: str) -> bool:
    """Spanish DNI (8 digits + letter) or NIE (X/Y/Z + 7 digits + letter): the letter is number mod 23."""
    if len(value) != 9:
        return False
    number = str("XYZ".index(value[0])) + value[1:8] if value[0] in "XYZ" else value[:8]
    return number.isdigit() and _DNI_LETTERS[int(number) % 23] == value[8]


def cpf_is_valid(digits: str) -> bool:
    """Brazilian CPF: 11 digits, the last two mod-11 check digits; all-equal digits are invalid."""
    if len(digits) != 11 or not digits.isdigit() or len(set(digits)) == 1:
        return False
    for length in (9, 10):
        total = sum(int(d) * w for d, w in zip(digits[:length], range(length + 1, 1, -1)))
        if (total * 10 % 11) % 10 != int(digits[length]):
            return False
    return True


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_resident_id_is_valid(value: str) -> bool:
    """Chinese resident identity card: 17 digits with a real birth date + ISO 7064 MOD 11-2 check (0-9, X)."""
    if len(value) != 18 or not value[:17].isdigit() or not _is_date(value[6:14]):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _CN_WEIGHTS))
    return "10X98765432"[total % 11] == value[17]


def _is_date(yyyymmdd: str, *, earliest: int = 1900) -> bool:
    try:
        day = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return earliest <= day.year <= datetime.date.today().year


_VERHOEFF_MULT = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_VERHOEFF_PERM = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]


def verhoeff_is_valid(digits: str) -> bool:
    check = 0
    for position, ch in enumerate(reversed(digits)):
        check = _VERHOEFF_MULT[check][_VERHOEFF_PERM[position % 8][int(ch)]]
    return check == 0


def aadhaar_is_valid(digits: str) -> bool:
    """Indian Aadhaar: 12 digits, first 2-9, Verhoeff check digit."""
    return len(digits) == 12 and digits.isdigit() and digits[0] not in "01" and verhoeff_is_valid(digits)


def my_number_is_valid(digits: str) -> bool:
    """Japanese Individual Number: 12 digits, the last a weighted mod-11 check digit."""
    if len(digits) != 12 or not digits.isdigit():
        return False
    body = digits[:11][::-1]
    total = sum(int(d) * (n + 1 if n <= 6 else n - 5) for n, d in enumerate(body, start=1))
    remainder = total % 11
    return int(digits[11]) == (0 if remainder <= 1 else 11 - remainder)


def de_tax_id_is_valid(digits: str) -> bool:
    """German Steuer-ID: 11 digits, no leading 0, one digit repeated 2-3 times, ISO 7064 MOD 11,10 check."""
    if len(digits) != 11 or not digits.isdigit() or digits[0] == "0":
        return False
    repeats = [n for n in Counter(digits[:10]).values() if n > 1]
    if len(repeats) != 1 or repeats[0] > 3:
        return False
    product = 10
    for ch in digits[:10]:
        total = (int(ch) + product) % 10 or 10
        product = total * 2 % 11
    return (11 - product) % 10 == int(digits[10])


def bsn_is_valid(digits: str) -> bool:
    """Dutch BSN: 9 digits passing the 11-test (weights 9..2 and -1)."""
    if len(digits) != 9 or not digits.isdigit() or digits == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(digits, (9, 8, 7, 6, 5, 4, 3, 2, -1)))
    return total % 11 == 0


def personnummer_is_valid(digits: str) -> bool:
    """Swedish personnummer/samordningsnummer YYMMDDNNNC: a real date (day + 60 allowed) and Luhn."""
    if len(digits) != 10 or not digits.isdigit():
        return False
    month, day = int(digits[2:4]), int(digits[4:6]) % 60
    return 1 <= month <= 12 and 1 <= day <= 31 and luhn_is_valid(digits)


def pesel_is_valid(digits: str) -> bool:
    """Polish PESEL: 11 digits, weights 1-3-7-9 repeated, check = (10 - sum mod 10) mod 10."""
    if len(digits) != 11 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits, (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)))
    return (10 - total % 10) % 10 == int(digits[10])
