"""The admin's pages, by concern; ``scheduler_app/admin.py`` registers them."""
