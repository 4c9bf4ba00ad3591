"""The root Query and Mutation: each module's fields, merged."""

from strawberry.tools import merge_types

from threadline.resolvers.messages import MessageMutations, MessageQueries
from threadline.resolvers.notifications import NotificationMutations, NotificationQueries
from threadline.resolvers.threads import ThreadMutations, ThreadQueries
from threadline.resolvers.users import UserMutations, UserQueries

Query = merge_types("Query", (UserQueries, ThreadQueries, MessageQueries, NotificationQueries))
Mutation = merge_types(
    "Mutation", (ThreadMutations, MessageMutations, UserMutations, NotificationMutations)
)
