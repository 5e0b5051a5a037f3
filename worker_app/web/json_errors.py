"""Errors of the JSON API (and of ``/metrics``) as JSON: ``{"error": ..., "message": ...}``."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Response

#: Paths whose errors are JSON.
MACHINE_PATHS = ("/api/", "/metrics")


def json_error(status: int, message: str, **extra: Any) -> Response:
    """An error response: the status's name, a message that says what is wrong, and any
    ``extra`` fields."""
    response = jsonify(error=HTTP_STATUS_CODES.get(status, "Error"), message=message, **extra)
    response.status_code = status
    return response


def install(app: Flask) -> None:
    """Answer HTTP errors on the API's paths in JSON (routing errors too: unknown path 404,
    wrong method 405 with ``Allow``); the pages keep their HTML errors."""

    @app.errorhandler(HTTPException)
    def handle(error: HTTPException) -> Any:
        if not request.path.startswith(MACHINE_PATHS) or error.code is None:
            return error
        response = json_error(error.code, str(error.description))
        for name, value in error.get_headers():
            if name == "Allow":  # a 405 names the methods the path takes
                response.headers[name] = value
        return response
