"""py-http: the whole request in, status and headers out (snapcall.response: cgi)."""


def handler(event, context):
    req = event["extensions"]["request"]
    if req["method"] == "DELETE":
        return "", 204
    if req["path"] == "/missing":
        return "no such thing\n", 404, [("X-Reason", "missing")]
    answer = {
        "method": req["method"],
        "path": req["path"],
        "query": req["query"],
        "trace": req["headers"].get("x-trace"),
        "data": event["data"],
    }
    return answer, 201, {"Content-Type": "application/json", "X-Handler": "py-http"}
