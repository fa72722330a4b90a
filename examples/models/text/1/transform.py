def transform(s: str) -> str:
    return s.upper()
