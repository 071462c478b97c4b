"""credential locks: a kind of their own for the authenticator codes of login-password recoveries (``recover``)

A recovery's wrong authenticator codes counted toward the login lock, and a login lock refused the recovery: anyone who
knows a number could lock its login with three wrong passwords and so keep the owner, who holds the SIM and the
authenticator, from recovering for three hours (found by an audit). Those codes now count toward a lock state of their
own, ``(user id, 'recover')``, which the kind's CHECK constraint lets in.

Going down deletes the ``recover`` rows (the older code neither reads nor knows them): a recovery locked then is no
longer locked, which is what the older code did anyway.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-08 10:00:00
"""
from alembic import op


revision = '0031'
down_revision = '0030'
branch_labels = None
depends_on = None


def _replace(condition):
    with op.batch_alter_table('credential_locks', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_credential_locks_kind_known'), type_='check')
        batch_op.create_check_constraint(op.f('ck_credential_locks_kind_known'), condition)


def upgrade():
    _replace("kind IN ('login', 'payment', 'recover')")


def downgrade():
    op.execute("DELETE FROM credential_locks WHERE kind = 'recover'")
    _replace("kind IN ('login', 'payment')")
