"""JSON responses: orjson writes them, with Flask's rules for the types it leaves out."""
import json
from datetime import datetime, timezone
from decimal import Decimal


def test_a_response_is_compact_json_with_a_newline(app):
    with app.test_request_context():
        response = app.json.response({"name": "jane_smith", "bio": "नमस्ते", "ids": [1, 2]})
    assert response.mimetype == "application/json"
    assert response.get_data() == (
        '{"name":"jane_smith","bio":"नमस्ते","ids":[1,2]}\n'.encode())


def test_types_orjson_leaves_out_are_written_as_flask_writes_them(app):
    with app.test_request_context():
        response = app.json.response(
            {"rating": Decimal("4.8"), "at": datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)})
    assert json.loads(response.get_data()) == {
        "rating": "4.8", "at": "Mon, 23 Nov 2026 18:00:00 GMT"}


def test_an_integer_beyond_64_bits_falls_back_to_the_json_module(app):
    with app.test_request_context():
        response = app.json.response({"id": 2**70})
    assert json.loads(response.get_data()) == {"id": 2**70}


def test_an_id_beyond_64_bits_in_a_path_is_a_clear_400(client, customer):
    response = client.get(f"/favorites/check/{2**70}", headers=customer.headers)
    assert response.status_code == 400
    assert response.json == {"detail": "listener_id must be a positive integer",
                             "errors": {"listener_id": ["Not a valid id."]}}
