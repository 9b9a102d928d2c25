"""The 47 prefectures of Japan: ISO 3166-2 code, region name and prefectural-capital position.

Region names are lowercase romaji so that they are valid DNS labels (Kubernetes object names).
Coordinates are those of the prefectural government offices, to four decimals (~10 m), which is
far finer than the latency model needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prefecture:
    code: str
    region_name: str
    capital: str
    latitude: float
    longitude: float


PREFECTURES: tuple[Prefecture, ...] = (
    Prefecture("JP-01", "hokkaido", "Sapporo", 43.0642, 141.3469),
    Prefecture("JP-02", "aomori", "Aomori", 40.8244, 140.7400),
    Prefecture("JP-03", "iwate", "Morioka", 39.7036, 141.1527),
    Prefecture("JP-04", "miyagi", "Sendai", 38.2688, 140.8721),
    Prefecture("JP-05", "akita", "Akita", 39.7186, 140.1024),
    Prefecture("JP-06", "yamagata", "Yamagata", 38.2404, 140.3633),
    Prefecture("JP-07", "fukushima", "Fukushima", 37.7503, 140.4676),
    Prefecture("JP-08", "ibaraki", "Mito", 36.3418, 140.4468),
    Prefecture("JP-09", "tochigi", "Utsunomiya", 36.5657, 139.8836),
    Prefecture("JP-10", "gunma", "Maebashi", 36.3912, 139.0609),
    Prefecture("JP-11", "saitama", "Saitama", 35.8570, 139.6489),
    Prefecture("JP-12", "chiba", "Chiba", 35.6047, 140.1233),
    Prefecture("JP-13", "tokyo", "Shinjuku", 35.6895, 139.6917),
    Prefecture("JP-14", "kanagawa", "Yokohama", 35.4478, 139.6425),
    Prefecture("JP-15", "niigata", "Niigata", 37.9026, 139.0236),
    Prefecture("JP-16", "toyama", "Toyama", 36.6953, 137.2113),
    Prefecture("JP-17", "ishikawa", "Kanazawa", 36.5947, 136.6256),
    Prefecture("JP-18", "fukui", "Fukui", 36.0652, 136.2216),
    Prefecture("JP-19", "yamanashi", "Kofu", 35.6642, 138.5684),
    Prefecture("JP-20", "nagano", "Nagano", 36.6513, 138.1810),
    Prefecture("JP-21", "gifu", "Gifu", 35.3912, 136.7223),
    Prefecture("JP-22", "shizuoka", "Shizuoka", 34.9769, 138.3831),
    Prefecture("JP-23", "aichi", "Nagoya", 35.1802, 136.9066),
    Prefecture("JP-24", "mie", "Tsu", 34.7303, 136.5086),
    Prefecture("JP-25", "shiga", "Otsu", 35.0045, 135.8686),
    Prefecture("JP-26", "kyoto", "Kyoto", 35.0214, 135.7556),
    Prefecture("JP-27", "osaka", "Osaka", 34.6863, 135.5200),
    Prefecture("JP-28", "hyogo", "Kobe", 34.6913, 135.1830),
    Prefecture("JP-29", "nara", "Nara", 34.6851, 135.8329),
    Prefecture("JP-30", "wakayama", "Wakayama", 34.2260, 135.1675),
    Prefecture("JP-31", "tottori", "Tottori", 35.5036, 134.2383),
    Prefecture("JP-32", "shimane", "Matsue", 35.4723, 133.0505),
    Prefecture("JP-33", "okayama", "Okayama", 34.6618, 133.9344),
    Prefecture("JP-34", "hiroshima", "Hiroshima", 34.3966, 132.4596),
    Prefecture("JP-35", "yamaguchi", "Yamaguchi", 34.1859, 131.4714),
    Prefecture("JP-36", "tokushima", "Tokushima", 34.0658, 134.5593),
    Prefecture("JP-37", "kagawa", "Takamatsu", 34.3401, 134.0434),
    Prefecture("JP-38", "ehime", "Matsuyama", 33.8416, 132.7657),
    Prefecture("JP-39", "kochi", "Kochi", 33.5597, 133.5311),
    Prefecture("JP-40", "fukuoka", "Fukuoka", 33.6064, 130.4181),
    Prefecture("JP-41", "saga", "Saga", 33.2494, 130.2988),
    Prefecture("JP-42", "nagasaki", "Nagasaki", 32.7448, 129.8737),
    Prefecture("JP-43", "kumamoto", "Kumamoto", 32.7898, 130.7417),
    Prefecture("JP-44", "oita", "Oita", 33.2382, 131.6126),
    Prefecture("JP-45", "miyazaki", "Miyazaki", 31.9111, 131.4239),
    Prefecture("JP-46", "kagoshima", "Kagoshima", 31.5602, 130.5581),
    Prefecture("JP-47", "okinawa", "Naha", 26.2124, 127.6809),
)

BY_REGION_NAME: dict[str, Prefecture] = {p.region_name: p for p in PREFECTURES}
BY_CODE: dict[str, Prefecture] = {p.code: p for p in PREFECTURES}

KYUSHU: frozenset[str] = frozenset(
    {"fukuoka", "saga", "nagasaki", "kumamoto", "oita", "miyazaki", "kagoshima"}
)
