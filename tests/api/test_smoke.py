def test_register_then_read_profile(api):
    account = api.register()
    response = api.client.get("/api/v1/me", headers=account["headers"])
    assert response.status_code == 200
    assert response.json["phone"] == account["phone"]
