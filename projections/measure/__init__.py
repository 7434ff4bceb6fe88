"""The measurement core: one public place where every read measures facts against targets at a cut."""
