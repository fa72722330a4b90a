def transform(s: str) -> str:
    return s[::-1]
