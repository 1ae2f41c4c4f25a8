/* The certifier's redirector (functions/redirector/handler.go) as a static C program: answers
 * 302 Found to $destination (default https://google.com) in a CGI-style response head, which
 * the image's label snapcall.response=cgi tells snapcall to read (docs/httpd.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    const char *destination = getenv("destination");
    if (destination == NULL || destination[0] == '\0') destination = "https://google.com";
    /* A value with a line break would inject headers: refuse it. */
    if (strpbrk(destination, "\r\n") != NULL) {
        fputs("destination holds a line break\n", stderr);
        return 1;
    }
    printf("Status: 302 Found\nLocation: %s\nContent-Type: text/html; charset=utf-8\n\n", destination);
    printf("<a href=\"%s\">Found</a>.\n", destination);
    return 0;
}
