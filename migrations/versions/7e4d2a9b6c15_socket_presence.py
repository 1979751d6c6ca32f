"""socket presence: processes holding feed sockets, and the users each holds

Revision ID: 7e4d2a9b6c15
Revises: 5b1e2c7d9a40
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7e4d2a9b6c15'
down_revision = '5b1e2c7d9a40'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table('socket_processes',
    sa.Column('process', sa.String(length=128), nullable=False),
    sa.Column('renewed_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('stopping', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('process', name=op.f('pk_socket_processes'))
    )
    op.create_table('held_sockets',
    sa.Column('user_id', BigId, nullable=False),
    sa.Column('process', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_held_sockets_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'process', name=op.f('pk_held_sockets'))
    )
    op.create_index('ix_held_sockets_process', 'held_sockets', ['process'], unique=False)


def downgrade():
    op.drop_index('ix_held_sockets_process', table_name='held_sockets')
    op.drop_table('held_sockets')
    op.drop_table('socket_processes')
