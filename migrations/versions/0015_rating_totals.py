"""rating totals: a user's ratings per role, summed as they are given

``GET /users/{id}/reputation`` summed every rating the user ever received, on every call: a merchant's page
read grows with its ratings. The sums now live in one row per user and role, kept in the rating's transaction
(``trades.rate``) and recomputed by ``flask wallet check``. Existing ratings are summed into it here.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 13:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'rating_totals',
        sa.Column('user_id', sa.String(length=40), nullable=False),
        sa.Column('role', sa.String(length=8), nullable=False),
        sa.Column('score', sa.BigInteger(), nullable=False),
        sa.Column('ratings', sa.BigInteger(), nullable=False),
        sa.Column('positive', sa.BigInteger(), nullable=False),
        sa.CheckConstraint("role IN ('seller', 'buyer')", name=op.f('ck_rating_totals_role_known')),
        sa.CheckConstraint('ratings > 0 AND positive >= 0 AND positive <= ratings',
                           name=op.f('ck_rating_totals_counts_consistent')),
        sa.CheckConstraint('score <= positive AND score >= 2 * positive - ratings',
                           name=op.f('ck_rating_totals_score_within_counts')),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rating_totals_user_id_users')),
        sa.PrimaryKeyConstraint('user_id', 'role', name=op.f('pk_rating_totals')),
    )
    op.execute("INSERT INTO rating_totals (user_id, role, score, ratings, positive)"
               " SELECT ratee_id, role, SUM(score), COUNT(*), SUM(CASE WHEN score = 1 THEN 1 ELSE 0 END)"
               " FROM ratings GROUP BY ratee_id, role")


def downgrade():
    op.drop_table('rating_totals')
