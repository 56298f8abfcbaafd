from django.contrib import admin

from devices.models import Device, DeviceOwnershipChange, TopicSubscription


class OwnershipChangeInline(admin.TabularInline):
    model = DeviceOwnershipChange
    fields = ("changed_at", "previous_user", "new_user")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Rebinding history"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "platform", "name", "environment", "active", "last_seen_at", "created_at")
    list_filter = ("platform", "active", "environment", "last_seen_at")
    search_fields = ("user__username", "name", "=token")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    readonly_fields = ("token_digest", "created_at", "deactivated_reason")
    inlines = [OwnershipChangeInline]
    show_full_result_count = False
    actions = ["deactivate", "reactivate"]

    @admin.action(description="Deactivate the selected devices")
    def deactivate(self, request, queryset):
        updated = queryset.update(active=False, deactivated_reason="deactivated in the admin")
        self.message_user(request, f"Deactivated {updated} device(s).")

    @admin.action(description="Reactivate the selected devices")
    def reactivate(self, request, queryset):
        updated = queryset.update(active=True, deactivated_reason="")
        self.message_user(request, f"Reactivated {updated} device(s).")


@admin.register(TopicSubscription)
class TopicSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("topic", "user", "created_at")
    search_fields = ("topic", "user__username")
    raw_id_fields = ("user",)
    list_select_related = ("user",)
