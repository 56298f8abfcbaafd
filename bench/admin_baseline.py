"""The baseline for bench/admin_bench.py: what a stock ModelAdmin over the same tables would do.

Exact counts (twice per page, with show_full_result_count), Django's automatic select_related,
stock filters and icontains searches across joins, and a notification page with an inline of
its deliveries. Mounted at /baseline-admin/ next to the real URLs, for the benchmark only.
"""

from django.contrib import admin
from django.urls import path

from delivery.models import Delivery, Notification
from notifyproject.urls import urlpatterns as clarion_urlpatterns

baseline_site = admin.AdminSite(name="baseline")


@admin.register(Delivery, site=baseline_site)
class StockDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "notification",
        "user",
        "channel",
        "device",
        "status",
        "attempts",
        "provider_message_id",
        "error",
        "sent_at",
        "delivered_at",
    )
    list_filter = ("status", "channel", "created_at")
    search_fields = ("user__username", "device__token", "error")
    list_per_page = 100


class StockDeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ("user", "channel", "device", "status", "attempts", "error", "updated_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Notification, site=baseline_site)
class StockNotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "status", "sender_key", "sender_user", "recipients", "created_at")
    inlines = [StockDeliveryInline]


urlpatterns = [path("baseline-admin/", baseline_site.urls), *clarion_urlpatterns]
