"""HTTP routes on the worker's web server (Faust views): routing only, see engine.api."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View

from engine.alert_api import AlertApi
from engine.api import Api, Reply


def _respond(view: View, reply: Reply) -> Response:
    return view.bytes(reply.body, content_type=reply.content_type, status=reply.status, headers=reply.headers)


def register_views(app: faust.App, api: Api, alerts: AlertApi) -> None:
    @app.page("/v1/decisions")
    class Decisions(View):
        async def post(self, request: Request) -> Response:
            body = await self.read_request_content(request)
            explain = request.query.get("explain", "").lower() in ("1", "true", "yes")
            return _respond(self, await api.post_decision(body, explain=explain))

    @app.page("/v1/customers/{customer_id}")
    class Customer(View):
        async def get(self, request: Request, customer_id: str) -> Response:
            return _respond(self, await api.get_customer(customer_id))

    @app.page("/v1/customers/{customer_id}/profile")
    class Profile(View):
        async def put(self, request: Request, customer_id: str) -> Response:
            body = await self.read_request_content(request)
            return _respond(self, await api.put_profile(customer_id, body))

    @app.page("/v1/alerts")
    class Alerts(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, await alerts.find(dict(request.query)))

    @app.page("/v1/alerts/{alert_id}")
    class AlertDetail(View):
        async def get(self, request: Request, alert_id: str) -> Response:
            return _respond(self, await alerts.detail(alert_id))

    @app.page("/v1/alerts/{alert_id}/{action}")
    class AlertAction(View):
        async def post(self, request: Request, alert_id: str, action: str) -> Response:
            body = await self.read_request_content(request)
            return _respond(self, await alerts.act(alert_id, action, body))

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, api.healthz())

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, api.readyz())

    @app.page("/metrics")
    class MetricsPage(View):
        async def get(self, request: Request) -> Response:
            return _respond(self, api.metrics_page())
