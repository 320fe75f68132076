from django import forms

from .models import Split


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL: one conversation per line, OpenAI chat format.")
    default_split = forms.ChoiceField(
        choices=Split.choices, initial=Split.TRAIN, help_text="Used for lines that do not name a split."
    )
