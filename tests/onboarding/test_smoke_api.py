import json

from onboarding.models import Event, Person


def test_track_is_stored(api):
    response = api.post(
        "/v1/track",
        json.dumps({"userId": "u1", "event": "Signed Up", "messageId": "m-1"}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    event = Event.objects.get()
    assert (event.name, event.message_id) == ("Signed Up", "m-1")
    assert Person.objects.get().external_id == "u1"
