/* ud2: execute an undefined instruction -> #UD. */
#include <stdio.h>
int main(void)
{
    printf("about to execute ud2\n");
    fflush(stdout);
    __asm__ volatile("ud2");
    return 0;
}
