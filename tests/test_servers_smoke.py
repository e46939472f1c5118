from tests.servers import DavServer


def test_server_answers_propfind(dav_server: DavServer) -> None:
    import requests

    r = requests.request(
        "PROPFIND", dav_server.principal_url, headers={"Depth": "0"}, timeout=10,
        auth=("alice", "x"),
    )
    assert r.status_code == 207
