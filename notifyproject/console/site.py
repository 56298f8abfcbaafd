"""Clarion's admin site: its own name, the product's models first, framework internals last.

Installed in place of django.contrib.admin (INSTALLED_APPS names ClarionAdminConfig), so every
`admin.site.register` and `@admin.register` lands here.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

# Apps a product team works in, in this order; anything else not internal follows them.
PRODUCT_APPS = ("delivery", "identities", "devices", "auth")
MODEL_ORDER = {
    "delivery": (
        "Notification",
        "Delivery",
        "DeliveryDashboard",
        "RecurringNotification",
        "Audience",
    ),
    "devices": ("Device", "TopicSubscription"),
}
# Tables the product's own screens manage (beat's schedule behind recurring notifications, the
# token store behind end-user tokens): grouped at the end under one heading.
INTERNAL_APPS = {"knox": "knox", "django_celery_beat": "beat"}
INTERNALS_LABEL = "internals"


class ClarionAdminSite(admin.AdminSite):
    site_header = "Clarion"
    site_title = "Clarion"
    index_title = "Push notifications"
    # The index lists every model; the sidebar's width goes to the delivery log's columns.
    enable_nav_sidebar = False

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        internal = [app for app in apps if app["app_label"] in INTERNAL_APPS]
        product = [app for app in apps if app["app_label"] not in INTERNAL_APPS]
        rank = {label: number for number, label in enumerate(PRODUCT_APPS)}
        product.sort(key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))
        for app in product:
            order = MODEL_ORDER.get(app["app_label"], ())
            app["models"].sort(
                key=lambda model: order.index(model["object_name"]) if model["object_name"] in order else 99
            )
        if not internal:
            return product
        models = [
            {**model, "name": f"{model['name']} ({INTERNAL_APPS[app['app_label']]})"}
            for app in internal
            for model in app["models"]
        ]
        internals = {
            "name": "Internals",
            "app_label": INTERNALS_LABEL,
            "app_url": internal[0]["app_url"],
            "has_module_perms": True,
            "models": models,
        }
        return [*product, internals]


class ClarionAdminConfig(AdminConfig):
    default_site = "notifyproject.console.site.ClarionAdminSite"
