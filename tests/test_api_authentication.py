"""Credentials that no database column can hold are refused with 401, on every backend."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"ad\x00min:secret").decode(),
        "Basic " + base64.b64encode(b"admin:sec\x00ret").decode(),
        "Token abc\x00def",
    ],
)
def test_nul_in_credentials_is_a_401_not_a_500(header: str) -> None:
    response = Client().get("/scheduler/status", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert "NUL" in response.json()["detail"]
