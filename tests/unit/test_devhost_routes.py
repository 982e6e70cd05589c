from devhost.routes import RouteTemplate


def test_literal_and_parameter_routes() -> None:
    assert RouteTemplate.compile("health").match("health") == {}
    assert RouteTemplate.compile("health").match("healthz") is None
    assert RouteTemplate.compile("pages/{name}").match("pages/billing") == {"name": "billing"}
    assert RouteTemplate.compile("pages/{name}").match("pages/a/b") is None
    assert RouteTemplate.compile("files/{*rest}").match("files/a/b.txt") == {"rest": "a/b.txt"}
    assert RouteTemplate.compile("items/{id:int}").match("items/42") == {"id": "42"}
