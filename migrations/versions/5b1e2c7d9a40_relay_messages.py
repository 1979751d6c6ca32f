"""relay messages: events too large for one PostgreSQL notification

Revision ID: 5b1e2c7d9a40
Revises: 1003c4020c10
Create Date: 2026-12-02

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5b1e2c7d9a40'
down_revision = '1003c4020c10'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('relay_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relay_messages'))
    )
    op.create_index('ix_relay_messages_created_at', 'relay_messages', ['created_at'],
                    unique=False)


def downgrade():
    op.drop_index('ix_relay_messages_created_at', table_name='relay_messages')
    op.drop_table('relay_messages')
