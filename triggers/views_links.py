"""Public endpoints behind the links in messages: open pixel, click redirect, unsubscribe."""

from __future__ import annotations

import base64

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from triggers.links import SALT_OPEN, SALT_UNSUBSCRIBE, click_target, message_from_token
from triggers.services.outcomes import message_record_outcome, person_unsubscribe

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    message_id = message_from_token(token, SALT_OPEN)
    if message_id is not None:
        message_record_outcome(message_id=message_id, outcome="opened")
    response = HttpResponse(_PIXEL, content_type="image/gif")
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def click(request: HttpRequest) -> HttpResponse:
    target = click_target(request.GET.get("t", ""))
    if target is None:
        raise Http404("This link is not valid.")
    message_id, url = target
    message_record_outcome(message_id=message_id, outcome="clicked")
    return HttpResponseRedirect(url)


@csrf_exempt  # RFC 8058 one-click: mail providers POST without a CSRF token; the token signs it
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    message_id = message_from_token(token, SALT_UNSUBSCRIBE)
    if message_id is None:
        raise Http404("This link is not valid.")
    if request.method == "POST":
        message = person_unsubscribe(message_id=message_id)
        if message is None:
            raise Http404("This link is not valid.")
        return render(
            request, "links/unsubscribed.html", {"channel": message.get_channel_display()}
        )
    return render(request, "links/unsubscribe.html", {"token": token})
