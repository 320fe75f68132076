from django import forms

from .importers import answers_upload_error
from .models import ImportJob, Split


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL: one conversation per line (OpenAI chat format), chat-completion log records, "
        "or BFCL test records."
    )
    dialect = forms.ChoiceField(
        label="Format",
        choices=ImportJob.Dialect.choices,
        initial=ImportJob.Dialect.AUTO,
        help_text="Auto reads each line by its shape.",
    )
    answers_file = forms.FileField(
        label="Possible answers",
        required=False,
        help_text="BFCL only: the possible_answer file with the same ids; each answer becomes the "
        "conversation's expected turn.",
    )
    default_split = forms.ChoiceField(
        choices=Split.choices, initial=Split.TRAIN, help_text="Used for lines that do not name a split."
    )

    def clean(self):
        data = super().clean()
        answers = data.get("answers_file")
        if answers and data.get("dialect"):
            problem = answers_upload_error(answers, data["dialect"])
            if problem:
                self.add_error("answers_file", problem)
        return data
