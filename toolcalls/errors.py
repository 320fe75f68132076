"""The one error shape of the toolcalls layer: where (a JSON-path-like field) and what."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def as_dict(self):
        return {"field": self.field, "message": self.message}
