from sqlalchemy import select

from core.db import db
from security.models import User
from security.passwords import Passwords


def test_login_rehashes_when_the_parameters_change(api, app):
    account = api.register()
    app.extensions["passwords"] = Passwords(app.config["PASSWORD_PEPPER"], time_cost=3, memory_kib=19456,
                                            parallelism=1)
    assert api.login(account["phone"]).status_code == 201
    with app.app_context():
        stored = db.session.scalars(select(User.login_password_hash).where(User.phone == account["phone"])).one()
    assert stored.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    assert api.login(account["phone"]).status_code == 201
