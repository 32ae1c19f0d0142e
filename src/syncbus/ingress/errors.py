"""JSON error bodies for every refusal: ``{"error": code, "message": text, "status": n}``.

Clients of an ESB are programs; a stable machine-readable code plus a
sentence for the person reading the log is what they need. Never HTML, never
a traceback.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(message)

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "status": status}, status_code=status,
                        headers=headers)
