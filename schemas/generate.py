"""``python -m schemas.generate``: write ``schemas/json/<type>.v<N>.json`` from the models.

The JSON Schema files are what non-Python clients validate against; a unit test fails
when they drift from the models, so run this after changing an event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.codec import EVENT_TYPES
from schemas.envelope import Envelope

JSON_DIR = Path(__file__).with_name("json")


def schema_for(etype: str) -> dict[str, Any]:
    version, model = EVENT_TYPES[etype]
    schema = Envelope[model].model_json_schema()  # type: ignore[valid-type]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://facestream.dev/schemas/{etype}.v{version}.json"
    schema["title"] = f"{etype} v{version}"
    schema["properties"]["type"] = {"const": etype}
    schema["properties"]["version"] = {"const": version}
    return schema


def render() -> dict[str, str]:
    """File name -> text, for every current event type."""
    return {
        f"{etype}.v{version}.json": json.dumps(schema_for(etype), indent=2, sort_keys=True) + "\n"
        for etype, (version, _) in EVENT_TYPES.items()
    }


def main() -> None:
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in render().items():
        (JSON_DIR / name).write_text(text)
        print(f"wrote schemas/json/{name}")


if __name__ == "__main__":
    main()
