from django.contrib import admin

from .models import Annotation, Assignment, Category, GoldLabel, ImportJob, Item, Membership, Project


class CategoryInline(admin.TabularInline):
    model = Category
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role"]
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "mode", "annotations_per_item", "review_policy"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [CategoryInline, MembershipInline]

    def get_readonly_fields(self, request, obj=None):
        # Chosen at creation; once there are items their labels are in this mode's shape.
        fixed = ["mode"] if obj is not None and obj.mode_is_fixed() else []
        return [*super().get_readonly_fields(request, obj), *fixed]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "external_id", "title", "status", "annotation_count"]
    list_filter = ["project", "status"]
    search_fields = ["external_id", "title"]
    show_full_result_count = False  # no COUNT(*) over a million rows on each page


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "item", "annotator", "categories", "created_at"]
    list_filter = ["project"]
    raw_id_fields = ["item"]
    show_full_result_count = False


admin.site.register(Assignment, raw_id_fields=["item"], list_display=["id", "item", "annotator", "status", "expires_at"])
admin.site.register(GoldLabel, raw_id_fields=["item"], list_display=["item", "categories", "source", "decided_at"])
admin.site.register(ImportJob, list_display=["filename", "project", "status", "created", "duplicates", "started_at"])
